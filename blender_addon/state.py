"""The add-on's running state for one Blender session (not saved in the .blend): the jobs and
the backend set-up. Plain data, imported by the UI modules, importing none of them."""
from . import jobs

SESSION = jobs.Session()


class _Setup:
    task = None   # the running or last backend_setup.SetupTask


SETUP = _Setup()
