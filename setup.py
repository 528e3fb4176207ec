"""metaextract: a Beam pipeline that catalogs DICOM, FITS, HDF5 and NetCDF files.

This file also serves as Beam's ``--setup_file``: remote workers (Dataflow, Flink) install the
same package, with the sample corpus, from the sdist it builds.
"""

import os
import re

from setuptools import Extension, find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "pipelines", "_version.py"), encoding="utf-8") as f:
    VERSION = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)
README = os.path.join(HERE, "README.md")

setup(
    name="metaextract",
    version=VERSION,
    description="Catalog scientific files (DICOM, FITS, HDF5, NetCDF) into Parquet with Apache Beam",
    long_description=open(README, encoding="utf-8").read() if os.path.exists(README) else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pipelines", "pipelines.*", "transforms", "transforms.*"]),
    package_data={"pipelines": ["sample_data/*/*", "report_assets/*"],
                  "transforms": ["formats/data/*"]},
    include_package_data=True,
    # The statistics kernel (transforms/stats.py). optional: without a C compiler the install
    # still succeeds and numpy computes the same statistics, about half as fast.
    ext_modules=[
        Extension("transforms._moments", ["transforms/_moments.c"], optional=True, extra_compile_args=["-O2"]),
    ],
    install_requires=[
        "apache-beam>=2.60,<3",
        "psutil>=5.9",
        "pydicom>=3.0,<4",
        "astropy>=6.0",
        "h5py>=3.10",
        "netCDF4>=1.6.5",
        "numpy>=1.26",
        "pyarrow>=14",
        "fsspec>=2024.2",
        "blake3>=0.4",  # --checksum blake3 (the default)
        "google-crc32c>=1.5",  # --checksum crc32c (C implementation)
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "hypothesis>=6.100",
            "duckdb>=1.0",
            "moto[server]>=5.0",
            "s3fs>=2024.2",
            "playwright>=1.40",  # drives Debian's chromium in the report's browser test
            "dask[distributed]>=2024.2",  # the runner tests run Beam's DaskRunner
            "pyjpegls>=1.3",  # the JPEG-LS pixel statistics test
        ],
        # pydicom's decoders for --stats on compressed DICOM pixel data (JPEG 8-bit and RLE
        # need nothing more: pillow and pydicom's own RLE decoder)
        "codecs": ["pyjpegls>=1.3", "pylibjpeg>=2.0", "pylibjpeg-openjpeg>=2.3"],
        "gcp": ["gcsfs>=2024.2", "apache-beam[gcp]>=2.60,<3"],
        "aws": ["s3fs>=2024.2"],
        "dask": ["dask[distributed]>=2024.2", "apache-beam[dask]>=2.60,<3"],
    },
    entry_points={
        "console_scripts": ["metaextract = pipelines.cli:cli"],
        "metaextract.extractors": [
            "dicom = transforms.formats.dicom:EXTRACTOR",
            "fits = transforms.formats.fits:EXTRACTOR",
            "hdf5 = transforms.formats.hdf5:EXTRACTOR",
            "netcdf = transforms.formats.netcdf:EXTRACTOR",
        ],
    },
)
