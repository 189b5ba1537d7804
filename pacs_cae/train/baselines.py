"""Moved to :mod:`pacs_cae.evaluation.baselines`; this module keeps old imports working."""

from pacs_cae.evaluation.baselines import *
