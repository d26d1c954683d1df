"""Constrained number types shared by losses, models, data sets and recipes.

Loss and model constructors annotate their arguments with these and are wrapped in
`pydantic.validate_call`, so the library and the recipe loader reject bad values with the same
message (`temperature: must be > 0, got -2`). Real numbers must be finite (a weight or temperature
of inf only turns the loss into NaN). Sizes have upper bounds far above any real use, so that a
typo such as `n_train: 1000000000000` is refused at once instead of hanging `distil validate`.
"""

from typing import Annotated

from pydantic import ConfigDict, Field, validate_call

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1)]
PositiveInt = Annotated[int, Field(gt=0)]

Seed = Annotated[int, Field(ge=0, lt=2**32)]  # what NumPy, scikit-learn and torch generators all accept
Count = Annotated[int, Field(gt=0, le=1_000_000)]  # samples (or copies of a sample) a data set generates
Width = Annotated[int, Field(gt=0, le=2**20)]  # a layer width, channel count, vocabulary or class count
Depth = Annotated[int, Field(gt=0, le=1024)]  # layers: each is a Python object, built one at a time
Length = Annotated[int, Field(ge=2, le=2**16)]  # tokens in a sequence

# Constructors take torch modules and tensors as well as numbers.
validated = validate_call(config=ConfigDict(arbitrary_types_allowed=True, strict=False))
