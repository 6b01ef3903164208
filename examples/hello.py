# A first submission: print, and leave a file in the workspace.
from datetime import datetime, timezone
from pathlib import Path

stamp = datetime.now(timezone.utc).isoformat()
Path("hello.txt").write_text(f"hello from the sandbox at {stamp}\n")
print("hello from the sandbox; wrote hello.txt")
