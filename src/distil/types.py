"""Constrained number types shared by losses, models and recipes.

Loss and model constructors annotate their arguments with these and are wrapped in
`pydantic.validate_call`, so the library and the recipe loader reject bad values with the same
message (`temperature: must be > 0, got -2`).
"""

from typing import Annotated

from pydantic import ConfigDict, Field, validate_call

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
PositiveInt = Annotated[int, Field(gt=0)]

# Constructors take torch modules and tensors as well as numbers.
validated = validate_call(config=ConfigDict(arbitrary_types_allowed=True, strict=False))
