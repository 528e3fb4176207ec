"""A realistic, deterministic synthetic corpus for the speed benchmark.

    python benchmarks/corpus.py [--per_format 500] [--corpus_dir benchmarks/_corpus/speed] [--force]

``--per_format`` files of each format, written by the format's reference library:

* ``dicom/``: CT- and MR-like images (alternating), about 110 top-level elements, nested
  sequences, two private blocks (one with a 2-4 KiB binary "CSA-like" value), 512x512 16-bit
  pixel data; explicit VR little endian, every fourth file implicit VR.
* ``fits/``: a primary image with a full TAN WCS, observing keywords, HISTORY and COMMENT
  cards (every fifth file a long string written as CONTINUE cards), an ``ERR`` image extension
  and a ``SOURCES`` binary-table extension with units.
* ``hdf5/``: NeXus-like scans: a dozen groups with ``NX_class`` and more attributes everywhere,
  about 25 datasets (a chunked, gzip-compressed detector stack among them), a hard link and a
  soft link, as NeXus writers lay them out.
* ``netcdf/``: CF-style files, half NetCDF-4 (compressed variables, a ``forecast`` group), half
  NetCDF-3 (classic and 64-bit offset, alternating).

Identifiers, dates, values and (slightly) shapes vary per file; everything derives from a seed
and the file's index, so two runs write the same metadata. The corpus is a cache: files already
there are kept, missing ones are written, files that do not belong are removed; ``--force``
rewrites everything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable

import numpy as np

SEED = 20240315
DEFAULT_PER_FORMAT = 500
DEFAULT_CORPUS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_corpus", "speed")
FORMATS = ("dicom", "fits", "hdf5", "netcdf")
UID_ROOT = "1.2.826.0.1.3680043.8.498"  # pydicom's UID root, for test data
BASE_DATE = dt.date(2023, 1, 2)


def _rng(fmt: str, index: int) -> np.random.Generator:
    return np.random.default_rng([SEED, FORMATS.index(fmt), index])


def file_name(fmt: str, index: int) -> str:
    """The corpus-relative name of file ``index`` of ``fmt`` (the name says what is inside)."""
    if fmt == "dicom":
        return f"dicom/{'ct' if index % 2 == 0 else 'mr'}_{index:05d}.dcm"
    if fmt == "fits":
        return f"fits/obs_{index:05d}.fits"
    if fmt == "hdf5":
        return f"hdf5/scan_{index:05d}.nxs"
    if fmt == "netcdf":
        kind = "nc4" if index % 2 == 0 else ("nc3classic" if index % 4 == 1 else "nc3offset")
        return f"netcdf/{kind}_{index:05d}.nc"
    raise ValueError(fmt)


# --- DICOM -------------------------------------------------------------------------------


def write_dicom(path: str, index: int) -> None:
    from pydicom.datadict import dictionary_VR
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import (
        CTImageStorage,
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        MRImageStorage,
    )

    rng = _rng("dicom", index)
    ct = index % 2 == 0
    study = index // 40  # 40 images per study, 20 per series
    series = index // 20
    study_date = BASE_DATE + dt.timedelta(days=study * 3)
    seconds = 8 * 3600 + (index % 40) * 7 + study * 11
    acq_time = f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}.{index % 1000:03d}000"
    sop_class = CTImageStorage if ct else MRImageStorage
    sop_uid = f"{UID_ROOT}.2.{study}.{series}.{index + 1}"
    transfer_syntax = ImplicitVRLittleEndian if index % 4 == 3 else ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = f"{UID_ROOT}.1"
    meta.ImplementationVersionName = "METAEXTRACT_BNCH"

    ds = Dataset()
    ds.file_meta = meta
    slice_no = index % 20
    spacing = round(float(rng.uniform(0.55, 0.98)), 6)
    thickness = 1.25 if ct else 3.0
    position = [-spacing * 256, -spacing * 256 + float(rng.uniform(-5, 5)), -100.0 + slice_no * thickness]
    values: list[tuple[str, object]] = [
        ("SpecificCharacterSet", "ISO_IR 100"),
        ("ImageType", ["ORIGINAL", "PRIMARY", "AXIAL"] if ct else ["ORIGINAL", "PRIMARY", "M", "ND"]),
        ("InstanceCreationDate", study_date.strftime("%Y%m%d")),
        ("InstanceCreationTime", acq_time),
        ("SOPClassUID", sop_class),
        ("SOPInstanceUID", sop_uid),
        ("StudyDate", study_date.strftime("%Y%m%d")),
        ("SeriesDate", study_date.strftime("%Y%m%d")),
        ("AcquisitionDate", study_date.strftime("%Y%m%d")),
        ("ContentDate", study_date.strftime("%Y%m%d")),
        ("StudyTime", "080000.000000"),
        ("SeriesTime", f"08{series % 60:02d}00.000000"),
        ("AcquisitionTime", acq_time),
        ("ContentTime", acq_time),
        ("AccessionNumber", f"ACC{study:07d}"),
        ("Modality", "CT" if ct else "MR"),
        ("Manufacturer", "SIEMENS" if ct else "GE MEDICAL SYSTEMS"),
        ("InstitutionName", "Benchmark General Hospital"),
        ("InstitutionAddress", "1 Synthetic Way, Testville"),
        ("ReferringPhysicianName", "Referrer^Rita"),
        ("StationName", f"STATION{study % 7}"),
        ("StudyDescription", "CT CHEST W/O CONTRAST" if ct else "MRI BRAIN W/WO"),
        ("SeriesDescription", "AXIAL 1.25mm" if ct else "T1 AXIAL POST"),
        ("InstitutionalDepartmentName", "Radiology"),
        ("PerformingPhysicianName", "Performer^Pat"),
        ("OperatorsName", "Operator^Olga"),
        ("ManufacturerModelName", "SOMATOM Definition AS" if ct else "SIGNA Premier"),
        ("PatientName", f"Synthetic^Patient{study:04d}"),
        ("PatientID", f"PID{study:06d}"),
        ("IssuerOfPatientID", "BENCH"),
        ("PatientBirthDate", (dt.date(1940, 1, 1) + dt.timedelta(days=int(rng.integers(0, 20000)))).strftime("%Y%m%d")),
        ("PatientSex", "F" if study % 2 else "M"),
        ("PatientAge", f"{int(rng.integers(20, 90)):03d}Y"),
        ("PatientSize", f"{rng.uniform(1.5, 1.95):.2f}"),
        ("PatientWeight", f"{rng.uniform(45, 120):.1f}"),
        ("BodyPartExamined", "CHEST" if ct else "HEAD"),
        ("ScanOptions", "HELICAL MODE" if ct else "FC"),
        ("SliceThickness", f"{thickness}"),
        ("SpacingBetweenSlices", f"{thickness}"),
        ("DeviceSerialNumber", f"{10000 + study % 13}"),
        ("SoftwareVersions", "syngo CT VA48A" if ct else "27\\LX\\MR Software release:RX27.0_R02"),
        ("ProtocolName", "Thorax_Routine" if ct else "BRAIN_ROUTINE"),
        ("PatientPosition", "FFS" if ct else "HFS"),
        ("StudyInstanceUID", f"{UID_ROOT}.2.{study}"),
        ("SeriesInstanceUID", f"{UID_ROOT}.2.{study}.{series}"),
        ("StudyID", f"{study}"),
        ("SeriesNumber", f"{series % 10 + 1}"),
        ("AcquisitionNumber", "1"),
        ("InstanceNumber", f"{slice_no + 1}"),
        ("ImagePositionPatient", [f"{v:.6f}" for v in position]),
        ("ImageOrientationPatient", ["1", "0", "0", "0", "1", "0"]),
        ("FrameOfReferenceUID", f"{UID_ROOT}.3.{study}"),
        ("PositionReferenceIndicator", ""),
        ("SliceLocation", f"{position[2]:.6f}"),
        ("SamplesPerPixel", 1),
        ("PhotometricInterpretation", "MONOCHROME2"),
        ("Rows", 512),
        ("Columns", 512),
        ("PixelSpacing", [f"{spacing}", f"{spacing}"]),
        ("BitsAllocated", 16),
        ("BitsStored", 12),
        ("HighBit", 11),
        ("PixelRepresentation", 0),
        ("WindowCenter", ["40", "-600"] if ct else "600"),
        ("WindowWidth", ["400", "1200"] if ct else "1200"),
        ("WindowCenterWidthExplanation", ["MEDIASTINUM", "LUNG"] if ct else "BRAIN"),
        ("LossyImageCompression", "00"),
        ("RequestedProcedureDescription", "Chest CT" if ct else "Brain MRI"),
        ("PerformedProcedureStepStartDate", study_date.strftime("%Y%m%d")),
        ("PerformedProcedureStepStartTime", "080000"),
        ("PerformedProcedureStepID", f"PPS{study:06d}"),
        ("PerformedProcedureStepDescription", "Routine"),
    ]
    if ct:
        values += [
            ("KVP", f"{int(rng.choice([100, 120, 140]))}"),
            ("DataCollectionDiameter", "500"),
            ("ReconstructionDiameter", f"{spacing * 512:.1f}"),
            ("DistanceSourceToDetector", "1085.6"),
            ("DistanceSourceToPatient", "595"),
            ("GantryDetectorTilt", "0"),
            ("TableHeight", f"{rng.uniform(140, 190):.1f}"),
            ("RotationDirection", "CW"),
            ("ExposureTime", f"{int(rng.integers(400, 1000))}"),
            ("XRayTubeCurrent", f"{int(rng.integers(80, 400))}"),
            ("Exposure", f"{int(rng.integers(50, 300))}"),
            ("FilterType", "FLAT"),
            ("GeneratorPower", f"{int(rng.integers(20, 60))}"),
            ("FocalSpots", "1.2"),
            ("ConvolutionKernel", "I30f\\3"),
            ("RevolutionTime", "0.5"),
            ("SingleCollimationWidth", "0.6"),
            ("TotalCollimationWidth", "38.4"),
            ("TableSpeed", "46"),
            ("TableFeedPerRotation", "23"),
            ("SpiralPitchFactor", "0.6"),
            ("CTDIvol", f"{rng.uniform(3, 15):.4f}"),
            ("RescaleIntercept", "-1024"),
            ("RescaleSlope", "1"),
            ("RescaleType", "HU"),
        ]
    else:
        values += [
            ("ScanningSequence", "GR"),
            ("SequenceVariant", ["SP", "SK"]),
            ("MRAcquisitionType", "3D"),
            ("SequenceName", "*fl3d1"),
            ("RepetitionTime", f"{rng.uniform(5, 9):.3f}"),
            ("EchoTime", f"{rng.uniform(2, 4):.3f}"),
            ("InversionTime", "450"),
            ("NumberOfAverages", "1"),
            ("ImagingFrequency", "127.7"),
            ("ImagedNucleus", "1H"),
            ("EchoNumbers", "1"),
            ("MagneticFieldStrength", "3"),
            ("NumberOfPhaseEncodingSteps", "256"),
            ("EchoTrainLength", "1"),
            ("PercentSampling", "100"),
            ("PercentPhaseFieldOfView", "100"),
            ("PixelBandwidth", "31.25"),
            ("ReceiveCoilName", "HNS Head"),
            ("TransmitCoilName", "BODY"),
            ("AcquisitionMatrix", [0, 256, 256, 0]),
            ("InPlanePhaseEncodingDirection", "ROW"),
            ("FlipAngle", "12"),
            ("SAR", f"{rng.uniform(0.1, 2):.4f}"),
            ("dBdt", "0"),
            ("PatientPosition", "HFS"),
        ]
    for keyword, value in values:
        if dictionary_VR(keyword) in ("FD", "FL") and isinstance(value, str):
            value = float(value)
        setattr(ds, keyword, value)

    def code(value: str, scheme: str, meaning: str) -> Dataset:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = scheme
        item.CodeMeaning = meaning
        return item

    ds.AnatomicRegionSequence = Sequence([code("T-D3000", "SRT", "Chest") if ct else code("T-A0100", "SRT", "Brain")])
    ds.ProcedureCodeSequence = Sequence([code("24627-2" if ct else "24590-2", "LN", ds.StudyDescription)])
    references = []
    for k in range(3):
        ref = Dataset()
        ref.ReferencedSOPClassUID = sop_class
        ref.ReferencedSOPInstanceUID = f"{UID_ROOT}.2.{study}.{series}.{index + 1000 + k}"
        references.append(ref)
    ds.ReferencedImageSequence = Sequence(references)
    request = Dataset()
    request.RequestedProcedureID = f"RP{study:06d}"
    request.ScheduledProcedureStepID = f"SPS{study:06d}"
    request.ScheduledProcedureStepDescription = ds.StudyDescription
    request.ScheduledProtocolCodeSequence = Sequence([code("P1", "99BENCH", ds.ProtocolName)])
    ds.RequestAttributesSequence = Sequence([request])
    source = Dataset()
    source.ReferencedSOPClassUID = sop_class
    source.ReferencedSOPInstanceUID = f"{UID_ROOT}.4.{index}"
    ds.SourceImageSequence = Sequence([source])

    vendor = ds.private_block(0x0019, "SIEMENS CT VA0  COAD" if ct else "GEMS_ACQU_01", create=True)
    vendor.add_new(0x10, "LO", "bench private value")
    vendor.add_new(0x11, "DS", f"{rng.uniform(0, 100):.3f}")
    vendor.add_new(0x12, "US", int(rng.integers(0, 1000)))
    vendor.add_new(0x13, "SH", f"P{index % 97}")
    csa = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    csa.add_new(0x08, "CS", "IMAGE NUM 4")
    csa.add_new(0x09, "LO", "20230101")
    csa.add_new(0x10, "OB", rng.integers(0, 256, int(rng.integers(2048, 4096)), dtype=np.uint8).tobytes())
    csa.add_new(0x11, "OB", rng.integers(0, 256, 200, dtype=np.uint8).tobytes())

    pixels = rng.integers(0, 4096, size=(512, 512), dtype=np.uint16)
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


# --- FITS --------------------------------------------------------------------------------


def write_fits(path: str, index: int) -> None:
    from astropy.io import fits

    rng = _rng("fits", index)
    ny = 256 + int(rng.integers(-16, 17))
    nx = 256 + int(rng.integers(-16, 17))
    date_obs = dt.datetime(2023, 6, 1, 20, 0, 0) + dt.timedelta(minutes=index * 7)
    mjd = 60096.0 + (date_obs - dt.datetime(2023, 6, 1)).total_seconds() / 86400
    ra = float(rng.uniform(0, 360))
    dec = float(rng.uniform(-30, 70))
    scale = 0.000111 + float(rng.uniform(-2e-6, 2e-6))
    rot = float(rng.uniform(-0.5, 0.5))
    cos, sin = np.cos(np.radians(rot)), np.sin(np.radians(rot))

    primary = fits.PrimaryHDU(rng.normal(1000, 30, size=(ny, nx)).astype(">f4"))
    h = primary.header
    cards = [
        ("ORIGIN", "BENCH-OBS", "organization creating the file"),
        ("DATE", (date_obs + dt.timedelta(hours=10)).strftime("%Y-%m-%dT%H:%M:%S"), "file creation date"),
        ("TELESCOP", "BENCH 2.5m", "telescope"),
        ("INSTRUME", "WFCAM-B", "instrument"),
        ("OBSERVER", f"Observer {index % 5}", ""),
        ("OBJECT", f"FIELD-{index // 10:04d}", "target name"),
        ("OBSTYPE", "OBJECT", ""),
        ("PROGID", f"2023A-{index % 17:03d}", "programme"),
        ("DATE-OBS", date_obs.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3], "UTC start of exposure"),
        ("MJD-OBS", round(mjd, 8), "[d] MJD at start"),
        ("EXPTIME", float(rng.choice([30.0, 60.0, 120.0, 300.0])), "[s] exposure time"),
        ("FILTER", str(rng.choice(["g", "r", "i", "z"])), "filter name"),
        ("AIRMASS", round(float(rng.uniform(1.0, 2.2)), 4), "airmass at start"),
        ("RA", f"{int(ra / 15):02d}:{int(ra * 4 % 60):02d}:{ra * 240 % 60:05.2f}", "telescope RA"),
        ("DEC", f"{dec:+.5f}", "telescope Dec"),
        ("EQUINOX", 2000.0, ""),
        ("RADESYS", "ICRS", ""),
        ("WCSAXES", 2, "number of WCS axes"),
        ("CTYPE1", "RA---TAN", ""),
        ("CTYPE2", "DEC--TAN", ""),
        ("CUNIT1", "deg", ""),
        ("CUNIT2", "deg", ""),
        ("CRVAL1", round(ra, 8), "[deg] RA at reference pixel"),
        ("CRVAL2", round(dec, 8), "[deg] Dec at reference pixel"),
        ("CRPIX1", nx / 2 + 0.5, ""),
        ("CRPIX2", ny / 2 + 0.5, ""),
        ("CD1_1", -scale * cos, ""),
        ("CD1_2", scale * sin, ""),
        ("CD2_1", scale * sin, ""),
        ("CD2_2", scale * cos, ""),
        ("LONPOLE", 180.0, ""),
        ("LATPOLE", round(dec, 8), ""),
        ("GAIN", round(float(rng.uniform(1.5, 2.5)), 3), "[e-/ADU]"),
        ("RDNOISE", round(float(rng.uniform(3, 6)), 3), "[e-]"),
        ("SATURATE", 65000, "[ADU]"),
        ("CCDTEMP", round(float(rng.uniform(-110, -95)), 2), "[C]"),
        ("SEEING", round(float(rng.uniform(0.6, 2.0)), 3), "[arcsec] FWHM"),
        ("SKYLEVEL", round(float(rng.uniform(100, 2000)), 2), "[ADU]"),
        ("ZEROPT", round(float(rng.uniform(24, 26)), 4), "photometric zero point"),
        ("PHOTCAL", bool(index % 3), "photometric conditions"),
        ("BUNIT", "ADU", ""),
    ]
    for key, value, comment in cards:
        h[key] = (value, comment)
    if index % 5 == 0:
        h["PIPELINE"] = "bench-reduce v2.3.1 --flat=twilight --bias=master --dark=none " * 2
    for k in range(8):
        h.add_history(f"bench-reduce step {k}: {['bias', 'flat', 'cosmic', 'wcs', 'phot'][k % 5]} done")
    h.add_comment("Synthetic observation written by metaextract's benchmark corpus.")
    h.add_comment("Values are random but plausible.")

    err = fits.ImageHDU(rng.uniform(0, 50, size=(ny, nx)).astype(">f4"), name="ERR")
    err.header["BUNIT"] = ("ADU", "")
    for key in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2"):
        err.header[key] = h[key]
    nrows = 200 + int(rng.integers(0, 300))
    columns = [
        fits.Column(name="ID", format="J", array=np.arange(nrows)),
        fits.Column(name="RA", format="D", unit="deg", array=ra + rng.normal(0, 0.05, nrows)),
        fits.Column(name="DEC", format="D", unit="deg", array=dec + rng.normal(0, 0.05, nrows)),
        fits.Column(name="X_IMAGE", format="E", unit="pix", array=rng.uniform(0, nx, nrows)),
        fits.Column(name="Y_IMAGE", format="E", unit="pix", array=rng.uniform(0, ny, nrows)),
        fits.Column(name="FLUX", format="E", unit="ADU", array=rng.lognormal(8, 1, nrows)),
        fits.Column(name="FLUXERR", format="E", unit="ADU", array=rng.uniform(1, 100, nrows)),
        fits.Column(name="MAG", format="E", unit="mag", array=rng.uniform(14, 24, nrows)),
        fits.Column(name="FWHM", format="E", unit="arcsec", array=rng.uniform(0.5, 3, nrows)),
        fits.Column(name="FLAGS", format="I", array=rng.integers(0, 8, nrows)),
        fits.Column(name="CLASS", format="8A", array=rng.choice(["STAR", "GALAXY"], nrows)),
    ]
    table = fits.BinTableHDU.from_columns(columns, name="SOURCES")
    table.header["NSOURCES"] = (nrows, "detections")
    table.header["DETTHRES"] = (1.5, "[sigma] detection threshold")
    fits.HDUList([primary, err, table]).writeto(path, overwrite=True)


# --- HDF5 (NeXus-like) -------------------------------------------------------------------


def write_hdf5(path: str, index: int) -> None:
    import h5py

    rng = _rng("hdf5", index)
    frames = 8 + int(rng.integers(-3, 5))
    side = 64 + 8 * int(rng.integers(-1, 2))
    start = dt.datetime(2023, 9, 1, 8, 0, 0) + dt.timedelta(minutes=index * 3)
    end = start + dt.timedelta(seconds=frames * 10)
    with h5py.File(path, "w") as f:
        f.attrs["NX_class"] = "NXroot"
        f.attrs["file_name"] = os.path.basename(path)
        f.attrs["file_time"] = start.isoformat()
        f.attrs["creator"] = "metaextract benchmark corpus"
        f.attrs["NeXus_version"] = "4.4.3"
        f.attrs["HDF5_Version"] = h5py.version.hdf5_version
        f.attrs["default"] = "entry"

        def group(parent, name: str, nx_class: str, **attrs):
            g = parent.create_group(name, track_order=True)
            g.attrs["NX_class"] = nx_class
            for key, value in attrs.items():
                g.attrs[key] = value
            return g

        def dataset(parent, name: str, data, units: str | None = None, long_name: str | None = None, **kwargs):
            d = parent.create_dataset(name, data=data, track_times=False, **kwargs)
            if units is not None:
                d.attrs["units"] = units
            if long_name is not None:
                d.attrs["long_name"] = long_name
            return d

        entry = group(f, "entry", "NXentry", default="data")
        dataset(entry, "title", f"scan {index:05d}: omega rotation")
        dataset(entry, "experiment_identifier", f"MX-{index // 25:05d}")
        dataset(entry, "start_time", start.isoformat())
        dataset(entry, "end_time", end.isoformat())
        dataset(entry, "program_name", "bench-daq").attrs["version"] = "1.4.2"

        instrument = group(entry, "instrument", "NXinstrument")
        dataset(instrument, "name", "BENCH beamline I04").attrs["short_name"] = "I04"
        source = group(instrument, "source", "NXsource")
        dataset(source, "name", "Benchmark Light Source")
        dataset(source, "type", "Synchrotron X-ray Source")
        dataset(source, "probe", "x-ray")
        dataset(source, "energy", 3.0, "GeV")
        dataset(source, "current", float(rng.uniform(295, 302)), "mA", "ring current")
        mono = group(instrument, "monochromator", "NXmonochromator")
        energy = float(rng.uniform(11, 14))
        dataset(mono, "energy", energy, "keV", "photon energy")
        dataset(mono, "wavelength", 12.398 / energy, "angstrom", "wavelength")
        slit = group(instrument, "slit", "NXslit")
        dataset(slit, "x_gap", float(rng.uniform(0.05, 0.2)), "mm")
        dataset(slit, "y_gap", float(rng.uniform(0.05, 0.2)), "mm")
        detector = group(instrument, "detector", "NXdetector")
        stack = rng.poisson(5, size=(frames, side, side)).astype("u2")
        data = dataset(
            detector,
            "data",
            stack,
            "counts",
            "detector counts",
            chunks=(1, side, side),
            compression="gzip",
            compression_opts=1,
            shuffle=True,
        )
        data.attrs["signal"] = 1
        data.attrs["interpretation"] = "image"
        dataset(detector, "x_pixel_size", 7.5e-5, "m")
        dataset(detector, "y_pixel_size", 7.5e-5, "m")
        dataset(detector, "distance", float(rng.uniform(0.15, 0.4)), "m", "sample-detector distance")
        dataset(detector, "count_time", np.full(frames, 0.1), "s")
        dataset(detector, "description", "Eiger2 XE 9M")
        dataset(detector, "sensor_material", "Si")
        dataset(detector, "sensor_thickness", 4.5e-4, "m")
        dataset(detector, "beam_center_x", float(rng.uniform(1500, 1600)), "pixel")
        dataset(detector, "beam_center_y", float(rng.uniform(1600, 1700)), "pixel")

        sample = group(entry, "sample", "NXsample", depends_on="/entry/sample/transformations/omega")
        dataset(sample, "name", f"crystal-{index % 37:03d}")
        dataset(sample, "chemical_formula", "C6H12O6")
        dataset(sample, "temperature", rng.uniform(99, 101, size=frames), "K", "sample temperature")
        transformations = group(sample, "transformations", "NXtransformations")
        omega = dataset(
            transformations, "omega", np.linspace(0, 0.1 * frames, frames, endpoint=False), "deg", "omega angle"
        )
        omega.attrs["transformation_type"] = "rotation"
        omega.attrs["vector"] = np.array([-1.0, 0.0, 0.0])
        omega.attrs["depends_on"] = "."

        monitor = group(entry, "monitor", "NXmonitor")
        dataset(monitor, "mode", "timer")
        dataset(monitor, "preset", 0.1 * frames, "s")
        dataset(monitor, "data", rng.normal(1e6, 1e3, size=frames), "counts")

        user = group(entry, "user", "NXuser")
        dataset(user, "name", f"User {index % 11}")
        dataset(user, "role", "principal_investigator")
        dataset(user, "facility_user_id", f"u{index % 11:04d}")

        process = group(entry, "process", "NXprocess")
        dataset(process, "program", "bench-daq")
        dataset(process, "version", "1.4.2")
        dataset(process, "date", end.isoformat())

        plot = group(entry, "data", "NXdata", signal="data", axes=["omega", ".", "."], omega_indices=0)
        plot["data"] = data  # a hard link: the same dataset under two names, as NeXus writers do
        plot["omega"] = h5py.SoftLink("/entry/sample/transformations/omega")


# --- NetCDF ------------------------------------------------------------------------------


def write_netcdf(path: str, index: int) -> None:
    import netCDF4

    rng = _rng("netcdf", index)
    nc4 = index % 2 == 0
    fmt = "NETCDF4" if nc4 else ("NETCDF3_CLASSIC" if index % 4 == 1 else "NETCDF3_64BIT_OFFSET")
    ntime = 4 + int(rng.integers(0, 5))
    nlevel = 6 + int(rng.integers(0, 4))
    nlat = 36 + int(rng.integers(-4, 5))
    nlon = 72 + int(rng.integers(-8, 9))
    t0 = dt.datetime(2023, 1, 1) + dt.timedelta(hours=6 * index)
    compress = {"zlib": True, "complevel": 1, "shuffle": True} if nc4 else {}

    with netCDF4.Dataset(path, "w", format=fmt) as ds:
        ds.setncatts(
            {
                "Conventions": "CF-1.8",
                "title": f"Synthetic reanalysis slice {index:05d}",
                "institution": "metaextract benchmark",
                "source": "bench-model v3.2",
                "history": f"{t0:%Y-%m-%d} created by benchmarks/corpus.py",
                "references": "https://example.org/bench",
                "comment": "random but plausible values",
                "featureType": "grid",
                "geospatial_lat_min": -90.0,
                "geospatial_lat_max": 90.0,
                "geospatial_lon_min": 0.0,
                "geospatial_lon_max": 360.0,
                "time_coverage_start": t0.isoformat(),
                "time_coverage_resolution": "PT6H",
                "realization": np.int32(index % 10),
            }
        )
        ds.createDimension("time", None)
        ds.createDimension("level", nlevel)
        ds.createDimension("lat", nlat)
        ds.createDimension("lon", nlon)
        ds.createDimension("nv", 2)

        def var(name, dtype, dims, attrs, data=None, **kwargs):
            v = ds.createVariable(name, dtype, dims, **kwargs)
            v.setncatts(attrs)
            if data is not None:
                v[:] = data
            return v

        times = np.arange(ntime) * 6.0
        var("time", "f8", ("time",), {"standard_name": "time", "long_name": "time", "units": f"hours since {t0:%Y-%m-%d %H:%M:%S}", "calendar": "standard", "axis": "T", "bounds": "time_bnds"}, times)
        var("time_bnds", "f8", ("time", "nv"), {}, np.stack([times - 3, times + 3], axis=1))
        var("level", "f4", ("level",), {"standard_name": "air_pressure", "long_name": "pressure level", "units": "hPa", "positive": "down", "axis": "Z"}, np.linspace(1000, 200, nlevel))
        var("lat", "f4", ("lat",), {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north", "axis": "Y"}, np.linspace(-90, 90, nlat))
        var("lon", "f4", ("lon",), {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east", "axis": "X"}, np.linspace(0, 360, nlon, endpoint=False))
        crs = var("crs", "i4", (), {"grid_mapping_name": "latitude_longitude", "semi_major_axis": 6378137.0, "inverse_flattening": 298.257223563})
        crs.assignValue(0)
        field = 250 + 30 * np.cos(np.radians(np.linspace(-90, 90, nlat)))[None, None, :, None]
        shape4 = (ntime, nlevel, nlat, nlon)
        fill = np.float32(-9999.0)
        common = {"grid_mapping": "crs", "cell_methods": "time: point"}
        var("ta", "f4", ("time", "level", "lat", "lon"), {"standard_name": "air_temperature", "long_name": "Air temperature", "units": "K", **common}, (field + rng.normal(0, 0.5, shape4)).astype("f4"), fill_value=fill, **compress)
        var("ua", "f4", ("time", "level", "lat", "lon"), {"standard_name": "eastward_wind", "long_name": "Eastward wind", "units": "m s-1", **common}, rng.normal(5, 3, shape4).astype("f4"), fill_value=fill, **compress)
        var("va", "f4", ("time", "level", "lat", "lon"), {"standard_name": "northward_wind", "long_name": "Northward wind", "units": "m s-1", **common}, rng.normal(0, 3, shape4).astype("f4"), fill_value=fill, **compress)
        var("pr", "f4", ("time", "lat", "lon"), {"standard_name": "precipitation_flux", "long_name": "Precipitation", "units": "kg m-2 s-1", "cell_methods": "time: mean", "grid_mapping": "crs"}, rng.exponential(1e-5, (ntime, nlat, nlon)).astype("f4"), fill_value=fill, **compress)
        var("orog", "i2", ("lat", "lon"), {"standard_name": "surface_altitude", "units": "m", "scale_factor": np.float32(1.0), "add_offset": np.float32(0.0), "grid_mapping": "crs"}, rng.integers(0, 3000, (nlat, nlon)).astype("i2"))
        if nc4:
            forecast = ds.createGroup("forecast")
            forecast.setncatts({"comment": "lead-time forecasts", "model_run": t0.isoformat()})
            forecast.createDimension("step", 3)
            step = forecast.createVariable("step", "i4", ("step",))
            step.setncatts({"long_name": "lead time", "units": "hours"})
            step[:] = [6, 12, 24]
            t2m = forecast.createVariable("tas", "f4", ("step", "lat", "lon"), fill_value=fill, **compress)
            t2m.setncatts({"standard_name": "air_temperature", "long_name": "Near-surface air temperature", "units": "K", "coordinates": "height", "grid_mapping": "crs"})
            t2m[:] = rng.normal(285, 5, (3, nlat, nlon)).astype("f4")
            height = forecast.createVariable("height", "f8", ())
            height.setncatts({"standard_name": "height", "units": "m", "positive": "up"})
            height.assignValue(2.0)


WRITERS: dict[str, Callable[[str, int], None]] = {
    "dicom": write_dicom,
    "fits": write_fits,
    "hdf5": write_hdf5,
    "netcdf": write_netcdf,
}


def _write_one(task: tuple[str, str, int]) -> str:
    corpus_dir, fmt, index = task
    path = os.path.join(corpus_dir, file_name(fmt, index))
    tmp = os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        WRITERS[fmt](tmp, index)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, path)  # a crash never leaves a half-written file under its final name
    return path


def expected_files(per_format: int, formats: tuple[str, ...] = FORMATS) -> list[tuple[str, int]]:
    return [(fmt, i) for fmt in formats for i in range(per_format)]


def ensure_corpus(
    corpus_dir: str = DEFAULT_CORPUS_DIR,
    per_format: int = DEFAULT_PER_FORMAT,
    *,
    force: bool = False,
    processes: int | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, int]:
    """Make ``corpus_dir`` hold exactly ``per_format`` files of each format; return the counts."""
    corpus_dir = os.path.abspath(corpus_dir)
    if force and os.path.isdir(corpus_dir):
        shutil.rmtree(corpus_dir)
    wanted = {fmt: {file_name(fmt, i) for i in range(per_format)} for fmt in FORMATS}
    missing: list[tuple[str, str, int]] = []
    removed = 0
    for fmt in FORMATS:
        folder = os.path.join(corpus_dir, fmt)
        os.makedirs(folder, exist_ok=True)
        present = {f"{fmt}/{name}" for name in os.listdir(folder)}
        for name in sorted(present - wanted[fmt]):  # stale files, temp files of a killed run
            os.remove(os.path.join(corpus_dir, name))
            removed += 1
        missing += [(corpus_dir, fmt, i) for i in range(per_format) if file_name(fmt, i) not in present]
    for name in os.listdir(corpus_dir):
        if name not in FORMATS:
            path = os.path.join(corpus_dir, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            removed += 1
    if missing:
        start = time.perf_counter()
        processes = processes or os.cpu_count() or 1
        if processes > 1 and len(missing) > 8:
            with multiprocessing.get_context("spawn").Pool(processes) as pool:
                for _ in pool.imap_unordered(_write_one, missing, chunksize=4):
                    pass
        else:
            for task in missing:
                _write_one(task)
        if log:
            log(f"corpus: wrote {len(missing)} files in {time.perf_counter() - start:.1f} s ({corpus_dir})")
    elif log:
        log(f"corpus: {per_format} files per format already in {corpus_dir} (cached)")
    if removed and log:
        log(f"corpus: removed {removed} files that did not belong")
    return {fmt: per_format for fmt in FORMATS}


def corpus_bytes(corpus_dir: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(corpus_dir) for f in fs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per_format", type=int, default=DEFAULT_PER_FORMAT, help="files per format (default %(default)s)")
    parser.add_argument("--corpus_dir", default=DEFAULT_CORPUS_DIR, help="where to write (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="delete and rewrite the whole corpus")
    parser.add_argument("--processes", type=int, default=None, help="writer processes (default: one per core)")
    args = parser.parse_args(argv)
    if args.per_format < 1:
        parser.error("--per_format must be >= 1")
    ensure_corpus(args.corpus_dir, args.per_format, force=args.force, processes=args.processes)
    print(f"corpus: {4 * args.per_format} files, {corpus_bytes(args.corpus_dir) / 1e6:,.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
