"""pytest --nbmake notebooks/: the CI scale of the notebooks (DLM_NOTEBOOK_SCALE, inherited by the
kernels nbmake starts), unless the caller set one; the notebooks' own default (1) is Colab's."""

import os

os.environ.setdefault("DLM_NOTEBOOK_SCALE", "0.025")
