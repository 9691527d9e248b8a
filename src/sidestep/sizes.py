"""Byte counts in words a person reads at a glance."""

UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def binary_size(count: float) -> str:
    """`count` bytes in the largest binary unit that keeps it at 1 or more: "512 B", "112.0 KiB", "7.00 MiB"
    (a rank-8 adapter is not "0.0 MiB")."""
    value, unit = float(count), 0
    while value >= 1024 and unit < len(UNITS) - 1:
        value, unit = value / 1024, unit + 1
    if unit == 0:
        return f"{int(value)} B"
    return f"{value:.2f} {UNITS[unit]}" if value < 10 else f"{value:.1f} {UNITS[unit]}"
