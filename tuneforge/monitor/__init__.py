"""Monitoring in production: the request log, feedback, drift, the dashboard, and the way back into training.

- `requests` — every answered request into the server's database (a writer thread; never blocks generation);
- `redact` — what the log may keep (PII redaction, `--redact`);
- `feedback` — `POST /v1/feedback` (score or thumbs, comment, corrected answer), linked to the request;
- `drift` — production vs the run's training data (`tuneforge monitor drift`);
- `dashboard` — `/dashboard` on the server and `tuneforge monitor report --output FILE.html`;
- `export` — well-rated and corrected requests → chat-format training rows (`tuneforge monitor export-feedback`);
- `attach` (`attach_monitoring`) — wires all of it into a server app (`tuneforge serve` calls it);
- `query` — the read side shared by drift, dashboard and export (time windows, rows).
"""
