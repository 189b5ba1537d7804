"""Moved to :mod:`pacs_cae.evaluation.report`; this module keeps old imports working."""

from pacs_cae.evaluation.report import *
