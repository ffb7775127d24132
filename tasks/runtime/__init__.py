"""How work behaves while it runs: the stop request a first Ctrl-C makes (threads check it), and
the store's turn as the stages take it (who this process is, how long it waits). No Prefect at
import time."""
