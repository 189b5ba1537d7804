"""Moved to :mod:`pacs_cae.evaluation.plots`; this module keeps old imports working."""

from pacs_cae.evaluation.plots import *
