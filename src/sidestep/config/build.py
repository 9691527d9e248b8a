"""Building a part from its config group (`_target_`), the one way the code does it: only a target Side-Step
ships (or the user allowed), and never what a nested `_target_` names (a part gets its options as plain data)."""

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from sidestep.config.trust import check_target
from sidestep.errors import SidestepError


def build(node: DictConfig, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`, plain containers in, and a part's own refusal (a `SidestepError` naming the option)
    passed on as it is rather than wrapped in Hydra's exception."""
    check_target(node._get_full_key("_target_"), node.get("_target_"))
    try:
        return instantiate(node, _convert_="all", _recursive_=False, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, SidestepError):
            raise err.__cause__ from None
        raise
