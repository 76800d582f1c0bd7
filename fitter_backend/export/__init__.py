"""Files the backend writes for the Blender add-on to import (see :mod:`.result_files`)."""
