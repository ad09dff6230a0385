"""Every test sees 8 simulated CPU devices; single-device runs use a 1-device mesh."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")
