"""Regenerate the small sample corpus in ``pipelines/sample_data`` (committed, ~100 KB).

    python -m pipelines.make_sample_data

Every file is written by the format's reference Python library (pydicom, astropy, h5py,
netCDF4) with fixed identifiers and dates, so that ``metaextract`` with no ``--input`` has one
of each format to show, plus one broken file and one file of another kind.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil

import numpy as np

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_data")


def write_dicom(folder: str) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage

    def base(sop_class, sop_uid, modality, transfer_syntax):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = transfer_syntax
        meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.100"
        ds.SeriesInstanceUID = sop_uid.rsplit(".", 1)[0]
        ds.Modality = modality
        ds.PatientID = "SAMPLE-001"
        ds.StudyDate = "20240315"
        ds.StudyTime = "101500"
        ds.Manufacturer = "metaextract sample"
        ds.Rows = ds.Columns = 32
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = (np.arange(32 * 32, dtype="<u2") % 4096).tobytes()
        return ds

    ct = base(CTImageStorage, "1.2.826.0.1.3680043.8.498.100.1.1", "CT", ExplicitVRLittleEndian)
    ct.SpecificCharacterSet = "ISO_IR 192"
    ct.PatientName = "Müller^Jürgen"
    ct.BodyPartExamined = "CHEST"
    ct.SliceThickness = "1.25"
    ct.PixelSpacing = ["0.7", "0.7"]
    ct.RescaleIntercept = "-1024"
    ct.RescaleSlope = "1"
    item = Dataset()
    item.CodeValue = "T-D3000"
    item.CodingSchemeDesignator = "SRT"
    item.CodeMeaning = "Chest"
    ct.AnatomicRegionSequence = Sequence([item])
    block = ct.private_block(0x0019, "METAEXTRACT SAMPLE", create=True)
    block.add_new(0x10, "LO", "private value")
    ct.save_as(os.path.join(folder, "ct_chest.dcm"), enforce_file_format=True)

    mr = base(MRImageStorage, "1.2.826.0.1.3680043.8.498.100.2.1", "MR", ImplicitVRLittleEndian)
    mr.PatientName = "Doe^Jane"
    mr.MagneticFieldStrength = "3"
    mr.save_as(os.path.join(folder, "mr_brain_implicit.dcm"), enforce_file_format=True)


def write_fits(folder: str) -> None:
    from astropy.io import fits

    primary = fits.PrimaryHDU(np.zeros((16, 16), dtype=">i2"))
    h = primary.header
    h["TELESCOP"] = ("SAMPLE-T", "telescope")
    h["INSTRUME"] = ("SAMPLECAM", "instrument")
    h["OBJECT"] = "M31"
    h["DATE-OBS"] = "2024-03-15T22:10:00"
    h["EXPTIME"] = (30.0, "[s] exposure time")
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = 10.6847, 41.2690
    h["CRPIX1"], h["CRPIX2"] = 8.5, 8.5
    h["CDELT1"], h["CDELT2"] = -0.0002777, 0.0002777
    h["HISTORY"] = "sample written by metaextract's make_sample_data"
    h["COMMENT"] = "not a real observation"
    image = fits.ImageHDU(np.ones((4, 8), dtype=">f4"), name="SCI")
    table = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="ID", format="J", array=np.arange(3)),
            fits.Column(name="FLUX", format="E", unit="Jy", array=np.array([1.5, 2.5, 3.5])),
        ],
        name="CATALOG",
    )
    fits.HDUList([primary, image, table]).writeto(os.path.join(folder, "m31_sample.fits"), overwrite=True)


def write_hdf5(folder: str) -> None:
    import h5py

    with h5py.File(os.path.join(folder, "nexus_scan.h5"), "w", track_order=True) as f:
        f.attrs["NX_class"] = "NXroot"
        f.attrs["file_name"] = "nexus_scan.h5"
        entry = f.create_group("entry", track_order=True)
        entry.attrs["NX_class"] = "NXentry"
        entry["title"] = "sample scan"
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        data.attrs["signal"] = "counts"
        counts = data.create_dataset(
            "counts", data=np.arange(64, dtype="i4").reshape(8, 8), chunks=(4, 8), compression="gzip", track_times=False
        )
        counts.attrs["units"] = "counts"
        x = data.create_dataset("x", data=np.linspace(0, 1, 8), track_times=False)
        x.attrs["units"] = "mm"
        x.attrs["long_name"] = "sample x position"
        inst = entry.create_group("instrument")
        inst.attrs["NX_class"] = "NXinstrument"
        inst["name"] = "SAMPLE-BEAMLINE"
        f["entry/data_link"] = h5py.SoftLink("/entry/data")


def write_netcdf(folder: str) -> None:
    import netCDF4

    with netCDF4.Dataset(os.path.join(folder, "sst_cf.nc"), "w", format="NETCDF4") as ds:
        ds.Conventions = "CF-1.8"
        ds.title = "sample sea surface temperature"
        ds.createDimension("time", None)
        ds.createDimension("lat", 4)
        ds.createDimension("lon", 5)
        t = ds.createVariable("time", "f8", ("time",))
        t.units = "days since 2024-01-01"
        t.standard_name = "time"
        lat = ds.createVariable("lat", "f4", ("lat",))
        lat.units, lat.standard_name = "degrees_north", "latitude"
        lon = ds.createVariable("lon", "f4", ("lon",))
        lon.units, lon.standard_name = "degrees_east", "longitude"
        sst = ds.createVariable("sst", "f4", ("time", "lat", "lon"), fill_value=np.float32(-999.0), zlib=True)
        sst.units, sst.standard_name = "K", "sea_surface_temperature"
        sst.long_name = "Sea surface temperature"
        t[:] = [0.0, 1.0]
        lat[:] = np.linspace(-10, 10, 4)
        lon[:] = np.linspace(100, 120, 5)
        sst[:] = 290.0 + np.arange(40, dtype="f4").reshape(2, 4, 5) / 10
        qc = ds.createGroup("quality")
        qc.comment = "quality flags"
        flag = qc.createVariable("sst_flag", "i1", ("time", "lat", "lon"))
        flag.flag_values = np.array([0, 1], dtype="i1")
        flag.flag_meanings = "good bad"
        flag[:] = 0

    with netCDF4.Dataset(os.path.join(folder, "precip_classic.nc"), "w", format="NETCDF3_CLASSIC") as ds:
        ds.Conventions = "CF-1.6"
        ds.history = "sample written by metaextract"
        ds.createDimension("time", None)
        ds.createDimension("station", 3)
        t = ds.createVariable("time", "i4", ("time",))
        t.units = "hours since 2024-03-15 00:00:00"
        pr = ds.createVariable("precip", "f4", ("time", "station"))
        pr.units = "mm"
        pr.long_name = "precipitation amount"
        pr.standard_name = "precipitation_amount"
        t[:] = [0, 1, 2]
        pr[:] = np.zeros((3, 3), dtype="f4")


def write_broken(folder: str) -> None:
    # An HDF5 file cut short after its first 1,200 bytes: a readable magic, an unreadable file.
    with open(os.path.join(folder, "..", "hdf5", "nexus_scan.h5"), "rb") as src:
        head = src.read(1200)
    with open(os.path.join(folder, "truncated_scan.h5"), "wb") as f:
        f.write(head)
    with open(os.path.join(folder, "notes.txt"), "w") as f:
        f.write("Not a scientific file: metaextract lists it as format=unknown, status=unsupported.\n")


def main() -> None:
    if os.path.isdir(HERE):
        shutil.rmtree(HERE)
    for name, writer in [
        ("dicom", write_dicom),
        ("fits", write_fits),
        ("hdf5", write_hdf5),
        ("netcdf", write_netcdf),
        ("other", write_broken),
    ]:
        folder = os.path.join(HERE, name)
        os.makedirs(folder)
        writer(folder)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(HERE) for f in fs)
    print(f"wrote the sample corpus to {HERE} ({total:,} bytes)")


if __name__ == "__main__":
    main()
