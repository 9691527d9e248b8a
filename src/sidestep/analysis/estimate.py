"""One measured label with how sure the measurement is."""

from dataclasses import dataclass
from typing import Union

Value = Union[float, str, None]


@dataclass(frozen=True)
class Estimate:
    value: Value  # None: nothing could be measured (too short, no pulse)
    confidence: float  # 0..1; below the option's threshold the value is flagged, not written

    def trusted(self, threshold: float) -> bool:
        return self.value is not None and self.confidence >= threshold

    @classmethod
    def nothing(cls) -> "Estimate":
        return cls(None, 0.0)

    def as_json(self) -> dict:
        return {"value": self.value, "confidence": round(float(self.confidence), 3)}
