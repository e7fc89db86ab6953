"""Endpoints the outside world calls about messages already sent (routed in
`delivery/urls.py`): provider status callbacks, open/click tracking,
one-click unsubscribe links (`unsubscribe.py`), email delivery events
(`email_events.py`), and the secret inbound hooks are signed with
(`signing.py`)."""
