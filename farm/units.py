"""The units a column is shown in to people, shared by the CLI's tables and the report's, so
`farm results` and `farm compare` write one accuracy alike (73.15%, not 0.7315 in one of them).
Plain data: importing it costs nothing (the report package would pull in the database)."""

PERCENT = {"accuracy", "dense_accuracy", "pruned_accuracy"}
FRACTION = {"sparsity", "target_sparsity", "min_sparsity", "max_sparsity", "crossover"}
BYTES = {"compressed_bytes", "dense_bytes"}
TIMES = {"speedup_fp32", "speedup_tf32", "speedup_fp16", "compression_ratio"}


def in_unit(value: float, column: str) -> str | None:
    """`value` written in `column`'s unit of PERCENT or FRACTION; None for any other column."""
    if column in PERCENT:
        return f"{100 * value:.2f}%"
    if column in FRACTION:
        return f"{value:.3f}"
    return None
