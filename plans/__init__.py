"""The papers' configurations, one JSON file per method, that autouad's planner starts from.
Installed as the package ``autouad_plans`` so that they travel with the code."""
from pathlib import Path

PLANS_FOLDER = Path(__file__).resolve().parent
