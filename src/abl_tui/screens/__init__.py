"""The dashboard's screens: main, item detail, runs, and the confirmation modal."""

from .confirm import ConfirmScreen
from .item_detail import ItemDetailScreen
from .main import MainScreen
from .runs import RunsScreen

__all__ = ["ConfirmScreen", "ItemDetailScreen", "MainScreen", "RunsScreen"]
