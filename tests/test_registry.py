"""Registries reject duplicates, list valid names, and check keyword hyper-parameters."""

import pytest

from postrl.registry import Registry, UnknownNameError


def test_duplicate_name_with_another_function_is_rejected():
    reg = Registry("thing")

    @reg.register("a", paper="p", summary="s")
    def a():
        pass

    with pytest.raises(ValueError, match="already registered"):
        @reg.register("a", paper="p", summary="s")
        def b():
            pass


def test_unknown_name_lists_valid_names():
    reg = Registry("thing")
    reg.register("alpha", paper="p", summary="s")(lambda: None)
    with pytest.raises(UnknownNameError, match="valid names: alpha"):
        reg.get("beta")


def test_check_kwargs_names_the_valid_parameters_even_with_var_kwargs():
    reg = Registry("thing")

    @reg.register("f", paper="p", summary="s")
    def f(x, *, scale: float = 1.0, **columns):
        """Title.

        y = scale * x
        """

    reg.check_kwargs("f", {"scale": 2.0}, "here")
    with pytest.raises(ValueError, match="here: thing 'f' takes no parameter 'scal'; its parameters are: scale"):
        reg.check_kwargs("f", {"scal": 2.0}, "here")
    assert reg.get("f").defaults == {"scale": 1.0} and reg.get("f").formula == "y = scale * x"
