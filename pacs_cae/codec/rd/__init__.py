"""Rate-distortion codec family (``mshp``): mean-scale hyperprior, gain units, integer-table entropy coding.

``network`` holds the trainable model (transforms, hyperprior, factorized prior, gain units), ``tables`` the
integer CDF tables derived from it at export, ``coder`` the constriction ANS coding over those tables and
``codec`` the slice <-> blob codec with its ``quality`` knob. See ``docs/codec.md``.
"""
