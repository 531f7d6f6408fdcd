"""Names every job of the package shares: the path type and NISQA's quality dimensions."""

import os
from typing import Union

#: A file or folder path, as the public functions take it.
PathLike = Union[str, os.PathLike]

#: NISQA's quality dimensions, overall MOS first: noisiness, colouration,
#: discontinuity, loudness (the corpus's column names).
NISQA_DIMENSIONS = ("mos", "noi", "col", "dis", "loud")
