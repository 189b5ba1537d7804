"""Moved to :mod:`pacs_cae.evaluation.eval_slices`; this module keeps old imports working."""

from pacs_cae.evaluation.eval_slices import *
