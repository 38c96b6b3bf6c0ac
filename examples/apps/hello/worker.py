"""The hello example app's background worker: prints a heartbeat."""

import os
import signal
import sys
import time

UNIT = os.environ.get("DEIS_UNIT", "unknown")
running = True


def stop(_signum, _frame):
    global running
    running = False


signal.signal(signal.SIGTERM, stop)
print(f"{UNIT} started", flush=True)
while running:
    print(f"{UNIT}: {os.environ.get('GREETING', 'Hello')}, still working", flush=True)
    for _ in range(50):
        if not running:
            break
        time.sleep(0.1)
print(f"{UNIT} stopped", flush=True)
sys.exit(0)
