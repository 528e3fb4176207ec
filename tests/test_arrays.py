"""ArrayReaders: statistics of every format equal numpy on the library's own full read, with
bounded reads through the counted file object."""

from __future__ import annotations

import io
import json
import math

import h5py
import netCDF4
import numpy as np
import pydicom
import pytest
from astropy.io import fits
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from tests.test_stats import assert_close, reference
from transforms.formats import arrays
from transforms.formats.base import HEAD_BYTES, Source
from transforms.stats import array_stats

KiB = 1024


class ReadRecorder(io.RawIOBase):
    """Passes reads through to the counted file and remembers the largest one."""

    def __init__(self, f):
        super().__init__()
        self._f = f
        self.largest = 0
        self.total = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def readinto(self, buffer):
        n = self._f.readinto(buffer)
        self.largest = max(self.largest, n or 0)
        self.total += n or 0
        return n

    def read(self, size=-1):
        data = self._f.read(size)
        self.largest = max(self.largest, len(data))
        self.total += len(data)
        return data

    def seek(self, offset, whence=io.SEEK_SET):
        return self._f.seek(offset, whence)

    def tell(self):
        return self._f.tell()


def source_of(path) -> Source:
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    return Source(url=str(path), size=path.stat().st_size, head=head)


def file_stats(open_arrays, path, slab_bytes):
    """{key: stat columns} of every array, and the largest read and the refs."""
    source = source_of(path)
    with source.open() as raw:
        recorder = ReadRecorder(raw)
        with open_arrays(source, recorder) as reader:
            refs = reader.arrays()
            result = {ref.key: array_stats(reader, ref, slab_bytes).columns() for ref in refs}
    return result, recorder.largest, refs, source


def check(open_arrays, path, expected: dict, scale=1e6):
    """Equal to numpy with one slab per array, with tiny slabs, and with bounded reads."""
    whole, _, refs, _ = file_stats(open_arrays, path, 1 << 30)
    assert set(whole) == set(expected)
    for slab_bytes in (1 << 30, 64, 1000):
        got, largest, refs, source = file_stats(open_arrays, path, slab_bytes)
        for key, want in expected.items():
            assert_close(got[key], want, scale)
        if slab_bytes < 1 << 30:
            chunk = max((math.prod(r.chunks) * r.itemsize for r in refs if r.chunks), default=0)
            assert largest <= slab_bytes + chunk + 64 * KiB, largest
    return refs, source


def ref_stats(values) -> dict:
    values = values if isinstance(values, np.ma.MaskedArray) else np.ma.masked_array(values)
    return reference(np.asarray(values.data), np.ma.getmaskarray(values))


# --- HDF5 ------------------------------------------------------------------------------------


def test_hdf5(tmp_path):
    path = tmp_path / "a.h5"
    rng = np.random.default_rng(0)
    big = rng.standard_normal((400, 300)).astype(np.float32)
    big[::17, ::13] = np.nan
    with h5py.File(path, "w") as f:
        f.create_dataset("big", data=big, chunks=(37, 41), compression="gzip")
        f.create_dataset("contig", data=rng.integers(-500, 500, (33, 170)).astype(">i2"))
        f.create_dataset("scalar", data=np.uint8(7))
        f.create_dataset("flags", data=rng.random(50) > 0.3)
        f.create_dataset("empty", shape=(0, 5), dtype="f8")
        f.create_dataset("null", data=h5py.Empty("f4"))  # a null dataspace: no element either
        f.create_dataset("text", data=np.array([b"a", b"b"]))
        f.create_dataset("pairs", data=np.zeros(3, [("a", "i4"), ("b", "f4")]))
        f.create_dataset("cplx", data=np.ones(3, np.complex64))
        f.create_dataset("enum", data=np.zeros(3, "i1"), dtype=h5py.enum_dtype({"A": 0}, "i1"))
        g = f.create_group("g")
        g.create_dataset("wide", data=rng.integers(0, 2**62, (10, 10)), chunks=(5, 5))
        g["alias"] = f["big"]  # a second name for the same dataset: a second row
        g["soft"] = h5py.SoftLink("/big")
    with h5py.File(path, "r") as f:
        expected = {(("object_path", p),): ref_stats(f[p][()])
                    for p in ("/big", "/contig", "/scalar", "/flags", "/empty", "/g/wide",
                              "/g/alias")}
        expected[(("object_path", "/null"),)] = ref_stats(np.empty(0, "f4"))
    refs, source = check(arrays.open_hdf5_arrays, path, expected, scale=2**62)
    assert [r.key[0][1] for r in refs] == ["/big", "/contig", "/empty", "/flags", "/g/alias",
                                           "/g/wide", "/null", "/scalar"]
    assert source.counter.bytes_read < 2 * path.stat().st_size


def test_hdf5_missing_filter_is_unreadable(tmp_path, monkeypatch):
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("z", data=np.arange(100.0), chunks=(10,), compression="gzip")
    monkeypatch.setattr(h5py.h5z, "filter_avail", lambda code: code != h5py.h5z.FILTER_DEFLATE)
    source = source_of(path)
    with source.open() as raw, arrays.open_hdf5_arrays(source, raw) as reader:
        (ref,) = reader.arrays()
        with pytest.raises(arrays.ArrayUnreadable, match="filter 1"):
            array_stats(reader, ref, 1 << 20)


def test_netcdf4_variable_with_a_missing_filter_is_unreadable_and_the_others_are_read(tmp_path, monkeypatch):
    """A NetCDF-4 variable compressed with a filter libhdf5 does not have here (netCDF4-python
    bundles zstd and bzip2, h5py does not): that variable is unreadable with the reason, the
    others keep their statistics (the file became an error)."""
    path = tmp_path / "a.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.createDimension("x", 10)
        ds.createVariable("v", "f4", ("x",), zlib=True)[:] = np.arange(10.0)
        ds.createVariable("plain", "f4", ("x",))[:] = np.arange(10.0)
    monkeypatch.setattr(h5py.h5z, "filter_avail", lambda code: code != h5py.h5z.FILTER_DEFLATE)
    source = source_of(path)
    with source.open() as raw, arrays.open_netcdf_arrays(source, raw) as reader:
        refs = {dict(ref.key)["variable"]: ref for ref in reader.arrays()}
        with pytest.raises(arrays.ArrayUnreadable, match="filter 1"):
            array_stats(reader, refs["v"], 1 << 20)
        assert array_stats(reader, refs["plain"], 1 << 20).columns()["stat_mean"] == 4.5


# --- NetCDF ----------------------------------------------------------------------------------


def netcdf_reference(path) -> dict:
    """{(group, variable): numpy stats of netCDF4-python's default (masked, scaled) read}."""
    out = {}
    with netCDF4.Dataset(path) as ds:
        groups = [ds]
        while groups:
            group = groups.pop(0)
            for name, var in group.variables.items():
                if var.dtype == str or var.dtype.kind not in "iuf":
                    continue
                out[(("group", group.path), ("variable", name))] = ref_stats(var[...])
            groups.extend(group.groups.values())
    return out


def fill_netcdf(ds, rng, groups: bool):
    ds.createDimension("time", None)
    ds.createDimension("y", 23)
    ds.createDimension("x", 31)
    t = ds.createVariable("time", "f8", ("time",))
    t[:] = np.arange(9)
    temp = ds.createVariable("temp", "f4", ("time", "y", "x"), fill_value=-999.0,
                             **({"zlib": True, "chunksizes": (2, 8, 9)} if groups else {}))
    values = rng.standard_normal((9, 23, 31)).astype(np.float32)
    values[0, ::3] = -999.0
    values[1, ::5] = np.nan
    temp[:] = values
    packed = ds.createVariable("packed", "i2", ("y", "x"))
    packed.scale_factor = np.float32(0.01)
    packed.add_offset = np.float32(10)
    packed.missing_value = np.array([-1, -2], "i2")
    packed.valid_min = np.int16(-1000)
    packed.valid_max = np.int16(30000)
    packed.set_auto_maskandscale(False)
    raw = rng.integers(-3000, 32000, (23, 31)).astype("i2")
    raw[0, :6] = [-1, -2, -32767, 5, 6, 7]
    packed[:] = raw
    byte = ds.createVariable("byte", "i1", ("x",))
    byte[:] = np.r_[-127, np.arange(30)].astype("i1")  # default fill of byte: masked (fill on)
    unsigned = ds.createVariable("unsigned", "i1", ("x",))
    unsigned._Unsigned = "true"
    unsigned.set_auto_maskandscale(False)
    unsigned[:] = np.arange(-15, 16).astype("i1")
    scaled = ds.createVariable("scaled", "i4", ("y",))
    scaled.scale_factor = 0.5
    scaled[:] = np.arange(23)
    ranged = ds.createVariable("ranged", "f8", ("x",))
    ranged.valid_range = np.array([0.0, 20.0])
    ranged[:] = np.arange(31.0) - 5
    ds.createVariable("scalar", "f8")[...] = 3.25
    ds.createVariable("label", "S1", ("x",))
    if groups:
        ds.createVariable("u64", "u8", ("x",))[:] = np.arange(31, dtype="u8") * 2**58
        g = ds.createGroup("g1").createGroup("g2")
        g.createDimension("n", None)
        long = g.createVariable("long", "i4", ("n",))
        short = g.createVariable("short", "i4", ("n",))  # fewer records: netCDF pads with fill
        long[:] = np.arange(12)
        short[:] = np.arange(5)
        g.createVariable("words", str, ("n",))


@pytest.mark.parametrize("fmt", ["NETCDF4", "NETCDF4_CLASSIC", "NETCDF3_CLASSIC",
                                 "NETCDF3_64BIT_OFFSET", "NETCDF3_64BIT_DATA"])
def test_netcdf(tmp_path, fmt):
    path = tmp_path / "a.nc"
    with netCDF4.Dataset(path, "w", format=fmt) as ds:
        fill_netcdf(ds, np.random.default_rng(1), groups=fmt == "NETCDF4")
    expected = netcdf_reference(path)
    assert (("group", "/"), ("variable", "temp")) in expected
    check(arrays.open_netcdf_arrays, path, expected, scale=2**64)


def test_netcdf_classic_single_record_variable_and_fill_off(tmp_path):
    path = tmp_path / "a.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as ds:
        ds.set_fill_off()
        ds.createDimension("t", None)
        ds.createDimension("k", 3)  # 3 shorts per record: 6 bytes, not padded (one record var)
        v = ds.createVariable("v", "i2", ("t", "k"))
        v[:] = np.arange(-60, 60).reshape(40, 3)
        b = ds.createVariable("b", "i1", ("k",))
        b[:] = [-127, 0, 1]
    check(arrays.open_netcdf_arrays, path, netcdf_reference(path))


def test_netcdf4_fill_off_keeps_byte_fill_values(tmp_path):
    path = tmp_path / "a.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.set_fill_off()
        ds.createDimension("k", 3)
        ds.createVariable("b", "i1", ("k",))[:] = [-127, 0, 1]
        ds.createVariable("s", "i2", ("k",))[:] = [-32767, 0, 1]
    expected = netcdf_reference(path)
    assert expected[(("group", "/"), ("variable", "b"))]["stat_count"] == 3
    check(arrays.open_netcdf_arrays, path, expected)



def test_netcdf4_fill_mode_is_netcdf_c_s_a_user_defined_hdf5_fill_value(tmp_path):
    """netCDF-C (get_fill_info) turns a variable's fill mode off unless its HDF5 dataset has a
    user-defined fill value, whatever the fill time: byte variables that h5py or h5netcdf wrote
    without _FillValue keep -127 and 255 as values; other types still mask their default fill."""
    from h5py import h5d, h5p, h5s, h5t

    path = tmp_path / "h5.nc"
    with h5py.File(path, "w") as f:
        f.create_dataset("i1", data=np.array([-127, 1, 2], "i1"))  # default fill value
        f.create_dataset("u1", data=np.array([255, 1, 2], "u1"))
        f.create_dataset("i2", data=np.array([-32767, 1, 2], "i2"))
        f.create_dataset("user", data=np.array([-127, 1, 2], "i1"), fillvalue=3)
        dcpl = h5p.create(h5p.DATASET_CREATE)
        dcpl.set_fill_time(h5d.FILL_TIME_NEVER)
        dcpl.set_fill_value(np.array(7, "u1"))  # user-defined: fill mode on despite "never"
        h5d.create(f.id, b"never_user", h5t.NATIVE_UINT8, h5s.create_simple((3,)), dcpl=dcpl)
        f["never_user"][:] = [255, 1, 2]
        dcpl = h5p.create(h5p.DATASET_CREATE)
        dcpl.set_fill_time(h5d.FILL_TIME_NEVER)
        h5d.create(f.id, b"never", h5t.NATIVE_INT8, h5s.create_simple((3,)), dcpl=dcpl)
        f["never"][:] = [-127, 1, 2]
    expected = netcdf_reference(path)
    counts = {key[1][1]: value["stat_count"] for key, value in expected.items()}
    assert counts == {"i1": 3, "u1": 3, "i2": 2, "user": 2, "never_user": 2, "never": 3}
    check(arrays.open_netcdf_arrays, path, expected)



def test_netcdf4_odd_sized_integers_are_read_as_their_netcdf_types(tmp_path):
    """24- and 40-bit integers (no numpy dtype: h5py cannot read them itself) and integers of
    fewer bits than their bytes are read converted by HDF5 to the native type netCDF-C types
    them as, as netCDF4-python reads them."""
    from tests.test_netcdf import _odd_ints

    path = tmp_path / "odd.nc"
    _odd_ints(str(path))
    expected = netcdf_reference(path)
    assert expected[(("group", "/"), ("variable", "int24"))]["stat_min"] == -5
    assert expected[(("group", "/"), ("variable", "uint24be"))]["stat_max"] == 100
    check(arrays.open_netcdf_arrays, path, expected)



def test_netcdf4_float16_values_are_floats(tmp_path):
    """float16 and bfloat16 variables are netCDF floats (netCDF-C before HDF5 1.14.4): read
    converted by HDF5 to float32, as Debian's ncdump prints them (h = 1, 2, 3, 0.5).
    netCDF4-python's netCDF-C (on HDF5 2) types them string instead."""
    from tests.test_netcdf import _float16s

    path = tmp_path / "f16.nc"
    _float16s(str(path))
    values = ref_stats(np.array([1, 2, 3, 0.5], "f4"))
    expected = {(("group", "/"), ("variable", "v")): ref_stats(np.ma.masked_all(4, "i4")),
                **{(("group", "/"), ("variable", name)): values for name in ("h", "hbe", "bf")}}
    check(arrays.open_netcdf_arrays, path, expected)


# --- FITS ------------------------------------------------------------------------------------


def test_fits(tmp_path):
    path = tmp_path / "a.fits"
    rng = np.random.default_rng(2)
    scaled = rng.integers(-32768, 32767, (40, 50)).astype(np.int16)
    scaled[3, :7] = -32768  # BLANK
    floats = rng.standard_normal((5, 20, 30)).astype(np.float32)
    floats[0, 0, :4] = np.nan
    unsigned = rng.integers(0, 65535, (30, 20)).astype(np.uint16)
    blank_only = rng.integers(-10, 10, (25, 25)).astype(np.int32)
    blank_only[0, :3] = 99
    table = fits.BinTableHDU.from_columns([fits.Column("c", "E", array=np.arange(3.0))])
    fits.HDUList([
        fits.PrimaryHDU(scaled), fits.ImageHDU(floats), fits.ImageHDU(unsigned),
        fits.ImageHDU(blank_only), table, fits.ImageHDU(),
        fits.ImageHDU(rng.integers(0, 255, (17, 19)).astype(np.uint8)),
    ]).writeto(path)
    with fits.open(path, mode="update", do_not_scale_image_data=True) as hdul:
        hdul[0].header["BSCALE"] = 0.25
        hdul[0].header["BZERO"] = 100.0
        hdul[0].header["BLANK"] = -32768
        hdul[3].header["BLANK"] = 99
    expected = {}
    with fits.open(path) as hdul:
        for index in (0, 1, 2, 3, 6):
            expected[(("hdu_index", index),)] = ref_stats(np.asarray(hdul[index].data))
    assert expected[(("hdu_index", 0),)]["stat_nan_count"] == 7
    assert expected[(("hdu_index", 3),)]["stat_nan_count"] == 3
    check(arrays.open_fits_arrays, path, expected)


@pytest.mark.parametrize("trailer", [b" " * 2880, b"junk after the last HDU ".ljust(2880), b"\0" * 2880])
def test_fits_special_records_after_the_last_hdu_do_not_stop_the_stats(tmp_path, trailer):
    """FITS 4.0 3.5 "special records" after the last HDU (astropy cannot open such a file:
    it reads them as a header without END): the image HDUs are those the header walk finds."""
    path = tmp_path / "a.fits"
    data = np.arange(60, dtype=np.int16).reshape(6, 10)
    fits.HDUList([fits.PrimaryHDU(data), fits.ImageHDU(data * 2.5)]).writeto(path)
    with fits.open(path) as hdul:
        expected = {(("hdu_index", i),): ref_stats(np.asarray(hdul[i].data)) for i in (0, 1)}
    with open(path, "ab") as f:
        f.write(trailer)
    check(arrays.open_fits_arrays, path, expected)


def test_fits_blank_of_pseudo_unsigned_image_is_missing(tmp_path):
    path = tmp_path / "a.fits"
    data = np.arange(100, dtype=np.uint16).reshape(10, 10)
    fits.PrimaryHDU(data).writeto(path)
    with fits.open(path, mode="update", do_not_scale_image_data=True) as hdul:
        hdul[0].header["BLANK"] = -32768  # raw value of 0
    got, _, _, _ = file_stats(arrays.open_fits_arrays, path, 64)
    with fits.open(path) as hdul:  # astropy keeps the value; it still counts as missing
        values = np.asarray(hdul[0].data)
    assert_close(got[(("hdu_index", 0),)], ref_stats(np.ma.masked_equal(values, 0)), 100)


# --- DICOM -----------------------------------------------------------------------------------


def write_dicom(path, pixels: np.ndarray, syntax=ExplicitVRLittleEndian, signed=False,
                encapsulated: bytes | None = None):
    frames, rows, cols = pixels.shape[:3]
    samples = pixels.shape[3] if pixels.ndim == 4 else 1
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.SamplesPerPixel = rows, cols, frames, samples
    ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(signed)
    if encapsulated is not None:
        ds.PixelData = encapsulated
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("kind", ["u16", "s16", "rgb", "single", "rle"])
def test_dicom(tmp_path, kind):
    rng = np.random.default_rng(3)
    path = tmp_path / "a.dcm"
    if kind == "rgb":
        pixels = rng.integers(0, 255, (4, 12, 10, 3)).astype(np.uint8)
        write_dicom(path, pixels)
    elif kind == "rle":
        from pydicom.encaps import encapsulate
        from pydicom.pixels.encoders import RLELosslessEncoder

        pixels = rng.integers(0, 4000, (3, 16, 8)).astype(np.uint16)
        frames = [RLELosslessEncoder.encode(f, rows=16, columns=8, samples_per_pixel=1,
                                            bits_allocated=16, bits_stored=16,
                                            photometric_interpretation="MONOCHROME2",
                                            pixel_representation=0, number_of_frames=1)
                  for f in pixels]
        write_dicom(path, pixels, RLELossless, encapsulated=encapsulate(frames))
    else:
        frames = 1 if kind == "single" else 7
        dtype = np.int16 if kind == "s16" else np.uint16
        pixels = rng.integers(-2000 if kind == "s16" else 0, 4000, (frames, 20, 15)).astype(dtype)
        write_dicom(path, pixels, signed=kind == "s16")
    library = pydicom.dcmread(path).pixel_array
    np.testing.assert_array_equal(library.reshape(pixels.shape), pixels)
    refs, _ = check(arrays.open_dicom_arrays, path, {(): ref_stats(library)})
    assert refs[0].shape == pixels.shape


def test_dicom_without_decoder_is_unreadable_and_without_pixels_has_no_array(tmp_path):
    path = tmp_path / "a.dcm"
    from pydicom.encaps import encapsulate

    write_dicom(path, np.zeros((1, 4, 4), np.uint8), "1.2.840.10008.1.2.4.100",
                encapsulated=encapsulate([b"ab"]))
    source = source_of(path)
    with source.open() as raw, arrays.open_dicom_arrays(source, raw) as reader:
        (ref,) = reader.arrays()
        with pytest.raises(arrays.ArrayUnreadable, match="decoder"):
            array_stats(reader, ref, 1 << 20)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    path = tmp_path / "b.dcm"
    ds.save_as(path)
    source = source_of(path)
    with source.open() as raw, arrays.open_dicom_arrays(source, raw) as reader:
        assert reader.arrays() == []


# --- bounded reads ---------------------------------------------------------------------------


def big_fits(path, rng):
    fits.PrimaryHDU(rng.standard_normal((500, 500)).astype(np.float32)).writeto(path)


def big_classic(path, rng):
    with netCDF4.Dataset(path, "w", format="NETCDF3_64BIT_OFFSET") as ds:
        ds.createDimension("t", None)
        ds.createDimension("y", 500)
        ds.createVariable("a", "f4", ("t", "y"))[:] = rng.standard_normal((500, 500))
        ds.createVariable("b", "f4", ("y",))[:] = rng.standard_normal(500)
        ds.createVariable("c", "i2", ("t",))[:] = np.arange(500)


def big_netcdf4(path, rng):
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.createDimension("t", None)
        ds.createDimension("y", 500)
        ds.createVariable("a", "f4", ("t", "y"), zlib=True,
                          chunksizes=(20, 100))[:] = rng.standard_normal((500, 500))


def big_hdf5(path, rng):
    with h5py.File(path, "w") as f:
        f["contiguous"] = rng.standard_normal((500, 500)).astype(np.float32)
        f.create_dataset("chunked", data=rng.standard_normal((500, 500)), chunks=(50, 50),
                         compression="gzip")


def big_dicom(path, rng):
    write_dicom(path, rng.integers(0, 4000, (40, 128, 100)).astype(np.uint16))


@pytest.mark.parametrize("make, open_arrays", [
    (big_fits, arrays.open_fits_arrays), (big_classic, arrays.open_netcdf_arrays),
    (big_netcdf4, arrays.open_netcdf_arrays), (big_hdf5, arrays.open_hdf5_arrays),
    (big_dicom, arrays.open_dicom_arrays)])
def test_reads_are_bounded_by_the_slab_size_and_each_byte_is_read_about_once(
        tmp_path, make, open_arrays):
    path = tmp_path / "big"
    make(path, np.random.default_rng(4))
    slab = 16 * KiB
    _, largest, refs, source = file_stats(open_arrays, path, slab)
    chunk = max((math.prod(r.chunks) * r.itemsize for r in refs if r.chunks), default=0)
    assert largest <= slab + chunk + 4 * KiB
    assert source.counter.bytes_read <= 1.1 * path.stat().st_size + 64 * KiB


@pytest.mark.parametrize("make, open_arrays", [
    (big_fits, arrays.open_fits_arrays), (big_classic, arrays.open_netcdf_arrays),
    (big_netcdf4, arrays.open_netcdf_arrays), (big_hdf5, arrays.open_hdf5_arrays),
    (big_dicom, arrays.open_dicom_arrays)])
def test_fsspec_files_give_the_same_statistics(tmp_path, make, open_arrays):
    import fsspec

    path = tmp_path / "big"
    make(path, np.random.default_rng(6))
    local, _, _, _ = file_stats(open_arrays, path, 64 * KiB)
    url = f"memory://stats/{tmp_path.name}"
    fsspec.filesystem("memory").pipe(url, path.read_bytes())
    source = Source(url=url, size=path.stat().st_size, head=path.read_bytes()[:HEAD_BYTES])
    with source.open() as f, open_arrays(source, f) as reader:
        remote = {ref.key: array_stats(reader, ref, 64 * KiB).columns() for ref in reader.arrays()}
    assert remote == local  # (memory:// files are BytesIO: no fsspec block cache to count)


def extracted_rows(extractor, path):
    from transforms.formats.base import Extraction

    out = Extraction(format=extractor.format)
    extractor.extract(source_of(path), out)
    return out.rows


def test_keys_match_the_extracted_rows(tmp_path):
    from transforms.formats import hdf5, netcdf

    h5 = tmp_path / "a.h5"
    with h5py.File(h5, "w") as f:
        f["a/b"] = np.arange(3.0)
        f["a/c"] = h5py.SoftLink("/a/b")
        f["s"] = np.array([b"x"])
        f["a/d"] = f["a/b"]
    _, _, refs, _ = file_stats(arrays.open_hdf5_arrays, h5, 1 << 20)
    rows = extracted_rows(hdf5.EXTRACTOR, h5)["hdf5"]
    numeric = {r["object_path"] for r in rows if r["kind"] == "dataset" and r["dtype"] != "|S1"}
    assert {dict(ref.key)["object_path"] for ref in refs} == numeric == {"/a/b", "/a/d"}
    nc = tmp_path / "a.nc"
    with netCDF4.Dataset(nc, "w", format="NETCDF4") as ds:
        fill_netcdf(ds, np.random.default_rng(7), groups=True)
    _, _, refs, _ = file_stats(arrays.open_netcdf_arrays, nc, 1 << 20)
    rows = extracted_rows(netcdf.EXTRACTOR, nc)["netcdf"]
    numeric = {(("group", r["group"]), ("variable", r["variable"])) for r in rows
               if r["dtype"] not in ("|S1", "str")}
    assert {ref.key for ref in refs} == numeric
    assert [r.shape for r in refs] == [tuple(r["shape"]) for r in rows
                                       if r["dtype"] not in ("|S1", "str")]


def test_unreadable_pixels_leave_stats_null_and_the_file_ok(tmp_path):
    """--stats on a DICOM whose pixels need a decoder not installed here: the file stays ok."""
    from pydicom.encaps import encapsulate

    from transforms.detect import detect
    from transforms.extract import catalog_rows
    from transforms.formats.base import FileInfo
    from transforms.work import Settings

    path = tmp_path / "a.dcm"
    write_dicom(path, np.zeros((1, 4, 4), np.uint8), "1.2.840.10008.1.2.4.100",
                encapsulated=encapsulate([b"ab"]))
    rows = catalog_rows(detect(FileInfo(str(path), path.stat().st_size)), settings=Settings(stats=True))
    assert rows["files"][0]["status"] == "ok", rows["files"][0]["error"]
    assert rows["files"][0]["checksum"].startswith("blake3:")
    assert rows["dicom"][0].get("stat_count") is None
    (entry,) = json.loads(rows["files"][0]["metadata"])["stats_unreadable"]
    assert entry["table"] == "dicom" and "decoder" in entry["reason"]


def test_a_dataset_whose_filter_is_missing_has_null_stats_and_a_reason(tmp_path, monkeypatch):
    """An HDF5 filter libhdf5 does not have: null stats, the file ok, the reason in
    files.metadata.stats_unreadable (small file and large file alike); an optional filter
    that is missing is skipped by libhdf5, so that dataset is read."""
    from transforms.detect import detect
    from transforms.extract import catalog_rows
    from transforms.formats.base import FileInfo
    from transforms.work import Settings

    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("z", data=np.arange(100.0), chunks=(10,), compression="gzip")
        f.create_dataset("plain", data=np.arange(10.0))
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((10,))
        dcpl.set_filter(32004, h5py.h5z.FLAG_OPTIONAL, (1, 2))  # lz4, not built in: skipped
        ds = h5py.h5d.create(f.id, b"opt", h5py.h5t.IEEE_F64LE, h5py.h5s.create_simple((10,)), dcpl=dcpl)
        ds.write(h5py.h5s.ALL, h5py.h5s.ALL, np.arange(10.0))
    available = h5py.h5z.filter_avail
    assert not available(32004)
    monkeypatch.setattr(h5py.h5z, "filter_avail", lambda code: code != h5py.h5z.FILTER_DEFLATE and available(code))
    for threshold in (1 << 30, 1000):  # one unit; data units
        settings = Settings(stats=True, chunk_threshold_bytes=threshold, unit_bytes=threshold)
        rows = catalog_rows(detect(FileInfo(str(path), path.stat().st_size)), settings=settings)
        files = rows["files"][0]
        assert files["status"] == "ok", files["error"]
        stats = {r["object_path"]: r.get("stat_count") for r in rows["hdf5"]}
        assert stats["/z"] is None and stats["/plain"] == 10 and stats["/opt"] == 10
        (entry,) = json.loads(files["metadata"])["stats_unreadable"]
        assert entry == {"table": "hdf5", "key": {"object_path": "/z"}, "reason": "HDF5 filter 1 deflate is not available"}


def test_hdf5_values_read_from_the_stored_bytes_equal_h5py(tmp_path):
    """Unfiltered datasets are read straight from their stored chunks and runs (one copy, not
    h5py's two): edge chunks cut to the shape, chunks never written (the fill value), big-endian
    and half floats, a contiguous dataset never written, all equal numpy on h5py's read."""
    path = tmp_path / "stored.h5"
    rng = np.random.default_rng(11)
    edge = rng.standard_normal((53, 29, 7)).astype(np.float32)
    edge[::5, ::3] = np.nan
    with h5py.File(path, "w") as f:
        f.create_dataset("edge", data=edge, chunks=(10, 8, 3))
        sparse = f.create_dataset("sparse", shape=(40, 40), dtype="i4", chunks=(8, 8), fillvalue=-7)
        sparse[3:11, 20:33] = rng.integers(0, 100, (8, 13))
        f.create_dataset("big_endian", data=rng.integers(-9000, 9000, (31, 17)).astype(">i4"), chunks=(4, 16))
        f.create_dataset("half", data=rng.standard_normal(1000).astype(np.float16))
        f.create_dataset("unwritten", shape=(6, 5), dtype="f8", fillvalue=2.5)
    with h5py.File(path, "r") as f:
        names = ("/edge", "/sparse", "/big_endian", "/half", "/unwritten")
        expected = {(("object_path", p),): ref_stats(f[p][()]) for p in names}
        stored = {p: arrays._H5Stored.of(f[p], None) is not None for p in names}
    assert stored == {"/edge": True, "/sparse": True, "/big_endian": True, "/half": True, "/unwritten": False}
    check(arrays.open_hdf5_arrays, path, expected)
    for slab_bytes in (1, 333, 4000):
        got, _, _, _ = file_stats(arrays.open_hdf5_arrays, path, slab_bytes)
        for key, want in expected.items():
            assert_close(got[key], want, 1e6)


def test_classic_record_variables_among_others_are_read_once(tmp_path):
    """Large records of one variable among several: read record by record, not in runs of
    whole records that read every other variable's records too (3x the data before, here)."""
    path = tmp_path / "records.nc"
    rng = np.random.default_rng(21)
    with netCDF4.Dataset(path, "w", format="NETCDF3_64BIT_OFFSET") as ds:
        ds.createDimension("t", None)
        ds.createDimension("y", 100)
        ds.createDimension("x", 170)
        for i in range(3):
            ds.createVariable(f"v{i}", "f4", ("t", "y", "x"))[:] = rng.normal(i, 1, (60, 100, 170))
        ds.createVariable("small", "i2", ("t",))[:] = np.arange(60)  # small records: in runs
    with netCDF4.Dataset(path) as ds:
        expected = {(("group", "/"), ("variable", name)): ref_stats(ds[name][:]) for name in ds.variables}
    check(arrays.open_netcdf_arrays, path, expected)
    source = source_of(path)
    with source.open() as raw:
        recorder = ReadRecorder(raw)
        with arrays.open_netcdf_arrays(source, recorder) as reader:
            for ref in reader.arrays():
                array_stats(reader, ref, 64 << 20)
    assert recorder.total < 1.1 * source.size, recorder.total / source.size


def test_hdf5_types_h5py_reads_converted_are_not_read_from_the_stored_bytes(tmp_path):
    """Types whose stored bytes are not numpy's dtype that h5py maps them to (bfloat16 as
    float32, a float with another exponent bias as float64, integers of reduced precision or
    with a bit offset as int32): libhdf5 converts them. Read straight from the file they gave
    garbage statistics or ran past the data (an EOFError making the file an error)."""
    from h5py import h5d, h5p, h5s, h5t

    path = tmp_path / "converted.h5"
    values = np.array([1.5, -2.0, 3.0, 100.0, 0.5, 7.0])
    integers = np.array([-100, -1, 0, 5, 200, 9], dtype=np.int32)
    with h5py.File(path, "w") as f:
        bfloat16 = h5t.IEEE_F32LE.copy()
        bfloat16.set_fields(15, 7, 8, 0, 7)
        bfloat16.set_offset(0)
        bfloat16.set_precision(16)
        bfloat16.set_size(2)
        bfloat16.set_ebias(127)
        biased = h5t.IEEE_F32LE.copy()
        biased.set_ebias(100)
        narrow = h5t.STD_I32LE.copy()
        narrow.set_precision(16)
        shifted = h5t.STD_I32LE.copy()
        shifted.set_precision(12)
        shifted.set_offset(4)
        for name, tid, memory, data, chunked in [
            ("bfloat16", bfloat16, h5t.NATIVE_DOUBLE, values, False),
            ("biased", biased, h5t.NATIVE_DOUBLE, values, False),
            ("narrow", narrow, h5t.NATIVE_INT32, integers, True),
            ("shifted", shifted, h5t.NATIVE_INT32, integers, False),
        ]:
            dcpl = h5p.create(h5p.DATASET_CREATE)
            if chunked:
                dcpl.set_chunk((4,))
            ds = h5d.create(f.id, name.encode(), tid, h5s.create_simple((6,), (h5s.UNLIMITED,) if chunked else None), dcpl=dcpl)
            ds.write(h5s.ALL, h5s.ALL, data, mtype=memory)
        f.create_dataset("after", data=np.full(64, 1e6))  # what a too-long read would meet
    with h5py.File(path, "r") as f:
        names = ("/bfloat16", "/biased", "/narrow", "/shifted")
        expected = {(("object_path", p),): ref_stats(f[p][()]) for p in names}
        assert all(arrays._H5Stored.of(f[p], None) is None for p in names)
    assert expected[(("object_path", "/bfloat16"),)]["stat_max"] == 100.0
    assert expected[(("object_path", "/shifted"),)]["stat_min"] == -100
    check(arrays.open_hdf5_arrays, path, {**expected, (("object_path", "/after"),): ref_stats(np.full(64, 1e6))})


def test_netcdf4_values_read_from_the_stored_bytes_are_masked_and_scaled(tmp_path):
    path = tmp_path / "stored.nc"
    rng = np.random.default_rng(12)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.createDimension("t", None)
        ds.createDimension("x", 37)
        packed = ds.createVariable("packed", "i2", ("t", "x"), chunksizes=(4, 10), fill_value=-999)
        packed.scale_factor, packed.add_offset = np.float32(0.01), np.float32(250.0)
        packed.set_auto_maskandscale(False)
        raw = rng.integers(-3000, 3000, (23, 37)).astype(np.int16)
        raw[::4, ::6] = -999
        packed[:23] = raw
        short = ds.createVariable("short", "f4", ("t", "x"), chunksizes=(5, 37))
        short[:9] = rng.standard_normal((9, 37))  # shorter than t: fill values beyond
    expected = netcdf_reference(path)
    check(arrays.open_netcdf_arrays, path, expected)


def test_a_classic_file_cut_short_in_its_data_has_the_statistics_netcdf_c_reads(tmp_path):
    """Bytes past the end of a classic file cut short in its data read as zeros, as netCDF-C
    (and so ncdump and netCDF4-python) reads them: the file stays ok with --stats, its
    statistics those of netCDF4-python's values."""
    import netCDF4

    from transforms.detect import detect
    from transforms.extract import catalog_rows
    from transforms.formats.base import FileInfo
    from transforms.work import Settings

    path = tmp_path / "cut.nc"
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as nc:
        nc.createDimension("x", 4)
        nc.createDimension("t", None)
        nc.createVariable("a", "f4", ("x",))[:] = [1, 2, 3, 4]
        nc.createVariable("r", "f8", ("t",))[0:3] = [10.1, 20.1, 30.1]
    path.write_bytes(path.read_bytes()[:-12])  # the last record and half of the one before
    with netCDF4.Dataset(path) as nc:
        expected = {name: np.asarray(nc[name][:], np.float64) for name in ("a", "r")}
    assert expected["r"][2] == 0.0
    for checksum in ("none", "blake3"):
        rows = catalog_rows(detect(FileInfo(str(path), path.stat().st_size)), settings=Settings(checksum=checksum, stats=True))
        assert rows["files"][0]["status"] == "ok", rows["files"][0]["error"]
        for row in rows["netcdf"]:
            values = expected[row["variable"]]
            assert row["stat_count"] == values.size
            assert row["stat_mean"] == pytest.approx(values.mean(), rel=1e-12)
            assert row["stat_min"] == values.min() and row["stat_max"] == values.max()


def test_a_contiguous_dataset_never_written_in_a_file_with_a_user_block_reads_the_fill_value(tmp_path):
    """libhdf5 adds the user block's size to a never-written contiguous dataset's undefined
    address (get_offset() is 511, not None): the direct reader must not read file bytes there;
    h5py returns the fill value, and so do the statistics."""
    from transforms.detect import detect
    from transforms.extract import catalog_rows
    from transforms.formats.base import FileInfo
    from transforms.work import Settings

    path = tmp_path / "ub.h5"
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("empty", shape=(6,), dtype="i4")  # contiguous, never written
        f["data"] = np.arange(100, dtype="i4")
    with h5py.File(path) as f:
        assert f["empty"].id.get_storage_size() == 0
        expected = f["empty"][()]
    rows = catalog_rows(detect(FileInfo(str(path), path.stat().st_size)), settings=Settings(checksum="none", stats=True))
    row = {r["object_path"]: r for r in rows["hdf5"]}["/empty"]
    assert row["stat_count"] == 6 and row["stat_max"] == float(expected.max()) == 0.0


def _stats_rows(path, **settings):
    from transforms.detect import detect
    from transforms.extract import catalog_rows
    from transforms.formats.base import FileInfo
    from transforms.work import Settings

    return catalog_rows(detect(FileInfo(str(path), path.stat().st_size)), settings=Settings(stats=True, **settings))


def test_dicom_pixels_pydicom_reads_only_from_the_whole_data_set_have_their_statistics(tmp_path):
    """A deflated data set (the frames live in the inflated copy) and a data set written in the
    other VR mode than declared: pydicom's frame iterator cannot read them from the file, so
    they are decoded from the data set read whole; the statistics equal pixel_array's."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 4000, size=(2, 16, 12), dtype=np.uint16)
    path = tmp_path / "deflated.dcm"
    write_dicom(path, pixels, DeflatedExplicitVRLittleEndian)
    expected = pydicom.dcmread(path).pixel_array.astype(np.float64)
    rows = _stats_rows(path)
    assert rows["files"][0]["status"] == "ok", rows["files"][0]["error"]
    (row,) = rows["dicom"]
    assert row["stat_count"] == expected.size and row["stat_mean"] == pytest.approx(expected.mean(), rel=1e-12)
    assert row["stat_min"] == expected.min() and row["stat_max"] == expected.max()


def test_dicom_one_bit_frames_not_on_byte_boundaries_have_their_statistics(tmp_path):
    """BitsAllocated 1, frames of 33 x 35 bits (not whole bytes): pydicom's frame iterator
    cannot cut them, its pixel_array of the whole data set can; equal to that."""
    import pydicom
    from pydicom.pixels import pack_bits

    path = tmp_path / "bits.dcm"
    pixels = np.random.default_rng(5).integers(0, 2, (4, 33, 35)).astype(np.uint8)
    write_dicom(path, pixels)
    ds = pydicom.dcmread(path)
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = 0
    ds.PixelData = pack_bits(pixels)  # one bit stream: frame 2 starts inside a byte
    ds.save_as(path, enforce_file_format=True)
    expected = pydicom.dcmread(path).pixel_array
    assert expected.shape == (4, 33, 35) and (expected == pixels).all()
    check(arrays.open_dicom_arrays, path, {(): ref_stats(expected)})


@pytest.mark.parametrize("little", [True, False])
def test_dicom_without_file_meta_has_its_statistics(tmp_path, little):
    """An ACR-NEMA style data set (no preamble, no file meta): its pixels are read in the
    encoding the data set was found in (pydicom needs the transfer syntax given)."""
    import pydicom
    from pydicom.dataset import Dataset

    pixels = np.arange(40, dtype=np.uint16).reshape(1, 5, 8) * 3
    ds = Dataset()
    ds.Modality = "OT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 5, 8, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixels.astype("<u2" if little else ">u2").tobytes()
    path = tmp_path / "acr.dcm"
    pydicom.dcmwrite(path, ds, implicit_vr=little, little_endian=little)
    assert path.read_bytes()[:2] == (b"\x08\x00" if little else b"\x00\x08")  # no preamble, no meta
    check(arrays.open_dicom_arrays, path, {(): ref_stats(pixels)})


def test_dicom_pixels_a_decoder_fails_on_or_whose_description_is_bad_have_null_stats_and_a_reason(tmp_path):
    """A decoder that fails on the pixel stream, or NumberOfFrames '1A' (pydicom cannot decode
    either): null stats, the file ok, the reason in files.metadata.stats_unreadable."""
    from pydicom.encaps import encapsulate

    bad_stream = tmp_path / "bad_jpeg.dcm"
    write_dicom(bad_stream, np.zeros((1, 8, 8), np.uint8), "1.2.840.10008.1.2.4.50",
                encapsulated=encapsulate([b"\xff\xd8 not a jpeg stream"]))
    bad_frames = tmp_path / "bad_frames.dcm"
    write_dicom(bad_frames, np.zeros((1, 8, 8), np.uint8))
    element = b"\x28\x00\x08\x00IS\x02\x001 "  # NumberOfFrames "1", as written
    assert bad_frames.read_bytes().count(element) == 1
    bad_frames.write_bytes(bad_frames.read_bytes().replace(element, element[:-2] + b"1A"))
    for path, reason in ((bad_stream, ("cannot be decoded", "no installed decoder")), (bad_frames, ("description",))):
        rows = _stats_rows(path)
        files = rows["files"][0]
        assert files["status"] == "ok", files["error"]
        assert rows["dicom"][0].get("stat_count") is None
        (entry,) = json.loads(files["metadata"])["stats_unreadable"]
        assert entry["table"] == "dicom" and any(r in entry["reason"] for r in reason), entry


def test_a_tile_compressed_fits_image_has_null_stats_and_a_reason(tmp_path):
    """A CompImageHDU is an ImageHDU in astropy 8, but its data in the file are compressed
    tiles: it is not read as pixels (that gave garbage statistics); its stats stay null, as
    documented, with the reason in files.metadata.stats_unreadable; other HDUs are read."""
    from astropy.io import fits

    image = np.arange(400, dtype=np.int16).reshape(20, 20)
    path = tmp_path / "comp.fits"
    fits.HDUList([fits.PrimaryHDU(image), fits.CompImageHDU(image, compression_type="RICE_1")]).writeto(path)
    rows = _stats_rows(path, chunk_threshold_bytes=1 << 30)
    files = rows["files"][0]
    assert files["status"] == "ok", files["error"]
    stats = {r["hdu_index"]: r.get("stat_count") for r in rows["fits"]}
    assert stats == {0: 400, 1: None}
    (entry,) = json.loads(files["metadata"])["stats_unreadable"]
    assert entry["key"] == {"hdu_index": 1} and "tile-compressed" in entry["reason"]


@pytest.mark.parametrize("card", ["BSCALE  = '2.0'", "BZERO   = '32768'", "BZERO   = 1E400",
                                  "BSCALE  = (2.0, 0.0)", "BZERO   ="])
def test_fits_scaling_that_is_not_a_number_leaves_that_image_unreadable_and_the_file_ok(tmp_path, card):
    """A BSCALE or BZERO that is not a number (fitsverify flags it; astropy cannot scale the
    data): that HDU's stats are null with the reason, the other image's are computed, the file
    stays ok (it was an error row with numpy's UFuncTypeError)."""
    from transforms.detect import detect
    from transforms.extract import catalog_rows
    from transforms.formats.base import FileInfo
    from transforms.work import Settings

    path = tmp_path / "a.fits"
    hdul = fits.HDUList([fits.PrimaryHDU(np.arange(6, dtype=np.int16).reshape(2, 3)),
                         fits.ImageHDU(np.arange(4, dtype=np.float32))])
    hdul.writeto(path)
    raw = bytearray(path.read_bytes())
    at = raw.index(b"EXTEND  =")  # the primary header's last card: replaced by the bad one
    raw[at:at + 80] = card.ljust(80).encode()
    path.write_bytes(bytes(raw))
    rows = catalog_rows(detect(FileInfo(str(path), path.stat().st_size)), settings=Settings(stats=True))
    files = rows["files"][0]
    assert files["status"] == "ok", files["error"]
    assert [r.get("stat_count") for r in rows["fits"]] == [None, 4]
    (entry,) = json.loads(files["metadata"])["stats_unreadable"]
    assert entry["key"] == {"hdu_index": 0} and "not a number" in entry["reason"]


@pytest.mark.parametrize("signed", [True, False])
def test_dicom_jpeg_ls_pixels_are_cut_to_bits_stored(tmp_path, signed):
    """A 12-bit image whose JPEG-LS stream has precision 16 (DCMTK's dcmcjpls writes that; here
    one pixel's bits above Bits Stored force it): the values are bits 0-11, sign-extended from
    bit 11 when signed, as DCMTK reads them (PS3.5 8.1.1); pydicom's JPEG-LS decoder kept the
    high bits (0..4095 for -2048..2047)."""
    jpeg_ls = pytest.importorskip("jpeg_ls")
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless

    rng = np.random.default_rng(3)
    low = rng.integers(0, 4096, (32, 32)).astype(np.uint16)  # the 12 stored bits
    cells = low.copy()
    cells[0, 0] |= 0xF000  # junk above Bits Stored: precision 16
    path = tmp_path / "jls.dcm"
    write_dicom(path, np.zeros((1, 32, 32), np.int16 if signed else np.uint16), JPEGLSLossless,
                signed=signed, encapsulated=encapsulate([bytes(jpeg_ls.encode(cells))]))
    ds = pydicom.dcmread(path)
    ds.BitsStored, ds.HighBit = 12, 11
    ds.save_as(path)
    values = ((low.astype(np.int32) ^ 0x800) - 0x800) if signed else low  # sign bit 11
    got, _, _, _ = file_stats(arrays.open_dicom_arrays, path, 1 << 20)
    assert_close(got[()], ref_stats(values[None]), 4096)


def _stats_rows(path, **settings):
    from transforms.detect import detect
    from transforms.extract import catalog_rows
    from transforms.formats.base import FileInfo
    from transforms.work import Settings

    return catalog_rows(detect(FileInfo(str(path), path.stat().st_size)), settings=Settings(stats=True, **settings))


def _twelve_bit_dataset(f) -> None:
    """Dataset "v": int32 of precision 16 (h5py refuses to create one of 12 bits)."""
    from h5py import h5d, h5s, h5t

    tid = h5t.STD_I32LE.copy()
    tid.set_precision(16)
    h5d.create(f.id, b"v", tid, h5s.create_simple((10,))).write(h5s.ALL, h5s.ALL, np.arange(-5, 5, dtype="i4"))


def _to_twelve_bits(path) -> None:
    """Patch the datatype message of :func:`_twelve_bit_dataset` to 12 bits of precision."""
    raw = bytearray(path.read_bytes())
    at = raw.index(b"\x04\x00\x00\x00\x00\x00\x10\x00")  # size 4, bit offset 0, precision 16
    raw[at + 6] = 12
    path.write_bytes(bytes(raw))


def test_hdf5_dataset_libhdf5_refuses_to_open_is_unreadable_and_the_file_ok(tmp_path):
    """An integer with more than half its bits unused (12-bit precision in 4 bytes, which
    h5dump reads): HDF5 2.x refuses to open it ("unusually large # of unused bits"), and the
    whole file was an error row under --stats. Its stats are null with the reason; the others
    are computed. (Written with precision 16, then the datatype message patched to 12.)"""
    path = tmp_path / "prec.h5"
    with h5py.File(path, "w") as f:
        _twelve_bit_dataset(f)
        f.create_dataset("ok", data=np.arange(4.0))
    _to_twelve_bits(path)
    rows = _stats_rows(path)
    files = rows["files"][0]
    assert files["status"] == "ok", files["error"]
    stats = {r["object_path"]: r.get("stat_count") for r in rows["hdf5"]}
    assert stats == {"/ok": 4, "/v": None}
    (entry,) = json.loads(files["metadata"])["stats_unreadable"]
    assert entry["key"] == {"object_path": "/v"} and "libhdf5 cannot open it" in entry["reason"]


@pytest.mark.parametrize("fmt", ["NETCDF3_CLASSIC", "NETCDF4"])
def test_netcdf_cf_attributes_of_several_values_or_none_do_not_fail_the_file(tmp_path, fmt):
    """scale_factor/add_offset of several values (or none) are not applied, as netCDF4-python
    (float() fails: no unpacking); _FillValue, valid_min and valid_max of several values or none
    are ignored (netCDF4-python raises on them); a numeric _Unsigned is not "true". Each made
    the whole file an error row under --stats, wiping every variable's statistics."""
    path = tmp_path / "odd.nc"
    values = np.arange(1, 6, dtype="i2")
    with netCDF4.Dataset(path, "w", format=fmt) as ds:
        ds.createDimension("x", 5)
        for name, attrs in {
            "sf_arr": {"scale_factor": np.array([2.0, 3.0])},
            "ao_empty": {"add_offset": np.array([], "f8")},
            "vmin_arr": {"valid_min": np.array([1, 2], "i2"), "valid_max": np.array([], "i2")},
            "unsigned_num": {"_Unsigned": np.array([1, 1], "i2")},
            "plain": {"scale_factor": 2.0},
        }.items():
            var = ds.createVariable(name, "i2", ("x",))
            var.set_auto_maskandscale(False)
            var.setncatts(attrs)
            var[:] = values
    rows = _stats_rows(path)
    files = rows["files"][0]
    assert files["status"] == "ok", files["error"]
    stats = {r["variable"]: (r.get("stat_count"), r.get("stat_mean")) for r in rows["netcdf"]}
    assert stats == {"sf_arr": (5, 3.0), "ao_empty": (5, 3.0), "vmin_arr": (5, 3.0), "unsigned_num": (5, 3.0),
                     "plain": (5, 6.0)}


def test_std_of_values_whose_squares_overflow_is_inf_as_numpy_not_nan():
    """Finite values beyond 1e154: the C kernel's S2 overflowed (S2 - S1^2/n = inf - inf, a NaN
    std); the numpy path gives inf, as numpy.std does."""
    from transforms.stats import Moments

    for values in ([1e300, 2e300, 3e300, 4e300, 5e300], [1e160, 2e160]):
        columns = Moments.of(np.array(values)).columns()
        with np.errstate(over="ignore"):
            assert columns["stat_std"] == np.std(values) == math.inf
        assert columns["stat_mean"] == pytest.approx(np.mean(values))


def test_netcdf4_variable_libhdf5_refuses_to_open_is_unreadable_and_the_file_ok(tmp_path):
    """The NetCDF-4 side of the reduced-precision case (12 bits in 4 bytes, ncdump: short v):
    the statistics reader's model left the whole file an error row; the variable is now
    unreadable with its reason, the others computed."""
    path = tmp_path / "prec.nc"
    with h5py.File(path, "w") as f:
        f.attrs["_NCProperties"] = np.bytes_(b"version=2,netcdf=4.9.0,hdf5=1.10.8")
        f["x"] = np.arange(10.0)
        f["x"].make_scale("x")
        _twelve_bit_dataset(f)
        f["v"].dims[0].attach_scale(f["x"])
    _to_twelve_bits(path)
    rows = _stats_rows(path)
    files = rows["files"][0]
    assert (files["format"], files["status"]) == ("netcdf", "ok"), files["error"]
    assert {r["variable"]: r.get("stat_count") for r in rows["netcdf"]} == {"v": None, "x": 10}
    (entry,) = json.loads(files["metadata"])["stats_unreadable"]
    assert entry["key"] == {"group": "/", "variable": "v"} and "libhdf5 cannot open it" in entry["reason"]
