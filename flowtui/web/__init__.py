"""`flowtui web`: the explorer in a browser (textual-serve), every tab a client of one warm
engine. `server` (the token-guarded web server), `tab` (what runs for each browser tab), `run`
(start the engine daemon and the server, stop both)."""
