"""Reading a text column of the training rows for a sampler (reference solutions, tiered hints)."""

from __future__ import annotations


def text_column(rows, column: str, sampler: str, key: str = "column", *, allow_empty: bool = False) -> list[str]:
    """`rows[i].columns[column]` as text for every training row; a missing (or, unless
    `allow_empty`, empty) value is an error naming the row, the column and the sampler kwarg."""
    if rows is None:
        raise ValueError(f"{sampler}: needs the training rows (its registry entry declares needs=('rows',))")
    out = []
    for i, row in enumerate(rows):
        value = row.columns.get(column)
        if value is None or (not allow_empty and str(value) == ""):
            have, what = ", ".join(sorted(row.columns)) or "(none)", "value" if value is None else "text"
            raise ValueError(f"{sampler}: training row {getattr(row, 'index', i) + 1} has no {what} in column "
                             f"{column!r} (sampler.kwargs.{key}); its columns: {have}")
        out.append(str(value))
    return out
