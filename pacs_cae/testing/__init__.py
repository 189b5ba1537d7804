"""Helpers shared by the test suite and ``benchmarks/``: DICOM object factories, DCMTK tool runners and a
``pacs-cae serve`` child process. Not used by the archive itself; nothing here is imported at run time."""
