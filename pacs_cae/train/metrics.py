"""Moved to :mod:`pacs_cae.evaluation.metrics`; this module keeps old imports working."""

from pacs_cae.evaluation.metrics import *
