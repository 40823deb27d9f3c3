"""Expectations of our own, registered with Great Expectations when this module is imported.

Imported by ``quality`` only when it builds a suite: it imports Great Expectations.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

from great_expectations.compatibility import pydantic
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import ColumnMapExpectation
from great_expectations.expectations.metrics.map_metric_provider import (
    ColumnMapMetricProvider,
    column_condition_partial,
)
from great_expectations.render import LegacyRendererType, RenderedStringTemplateContent
from great_expectations.render.renderer.renderer import renderer


def on_grid(values: Any, step: float) -> Any:
    """Whether each value is a multiple of ``step`` written as the double closest to its
    decimal (31.15 on a 0.05 grid, not 31.150000000000002), as a coarsened position is.

    Numeric all the way: the regular expression this replaces formatted every float as text
    first, most of the anonymized suite's time.
    """
    scale = 10 ** max(0, -int(Decimal(str(step)).as_tuple().exponent))
    units = round(step * scale)  # the step in whole 10^-d: 5 for 0.05
    if units <= 0 or abs(units / scale - step) > 1e-12:
        raise ValueError(f"grid step {step!r} is not a positive decimal")
    # cell * units is a whole number, so dividing it by 10^d gives the closest double.
    return (values / step).round() * units / scale == values


class ColumnValuesOnGrid(ColumnMapMetricProvider):
    condition_metric_name = "column_values.on_grid"
    condition_value_keys = ("step",)

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: Any, step: float, **kwargs: Any) -> Any:
        return on_grid(column, step)


class ExpectColumnValuesToBeOnGrid(ColumnMapExpectation):
    """Expect column values to be multiples of ``step``, each the double closest to its decimal.

    Args:
        column: the column.
        step: the grid's spacing as a decimal, for example 0.05.
    """

    step: float = pydantic.Field(description="the grid's spacing, e.g. 0.05")

    library_metadata: ClassVar[dict[str, Any]] = {"maturity": "production", "tags": ["numeric"]}
    map_metric = "column_values.on_grid"
    success_keys = ("step", "mostly")
    args_keys = ("column", "step")

    @classmethod
    @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
    def _prescriptive_renderer(
        cls, configuration: Any = None, result: Any = None, runtime_configuration: Any = None
    ) -> list[RenderedStringTemplateContent]:
        """The line Data Docs shows: "lat_gcj02 values must be multiples of 0.05."."""
        runtime = runtime_configuration or {}
        kwargs = configuration.kwargs if configuration else {}
        template = "values must be multiples of $step."
        if runtime.get("include_column_name") is not False:
            template = "$column " + template
        params = {"column": kwargs.get("column"), "step": kwargs.get("step")}
        return [
            RenderedStringTemplateContent(
                content_block_type="string_template",
                string_template={
                    "template": template,
                    "params": params,
                    "styling": runtime.get("styling"),
                },
            )
        ]
