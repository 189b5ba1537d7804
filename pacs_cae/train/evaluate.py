"""Moved to :mod:`pacs_cae.evaluation.evaluate`; this module keeps old imports working."""

from pacs_cae.evaluation.evaluate import *
