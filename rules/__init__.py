"""The rule catalogue: which cloud API calls change which Terraform resources, and how badly."""

from rules.catalogue import Catalogue, CatalogueError, EventRule, load_catalogue
from rules.severity import SeverityRules, load_severity

__all__ = [
    "Catalogue",
    "CatalogueError",
    "EventRule",
    "SeverityRules",
    "load_catalogue",
    "load_severity",
]
