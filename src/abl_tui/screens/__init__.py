"""The dashboard's screens: main, item detail, runs, help, and the confirmation modal."""

from .confirm import ConfirmScreen
from .controls import Controls, ControlsScreen
from .help import HelpScreen
from .item_detail import ItemDetailScreen
from .main import MainScreen
from .runs import RunsScreen

__all__ = [
    "ConfirmScreen",
    "Controls",
    "ControlsScreen",
    "HelpScreen",
    "ItemDetailScreen",
    "MainScreen",
    "RunsScreen",
]
