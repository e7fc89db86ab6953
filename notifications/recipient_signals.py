"""Signals for apps above this one that keep rows of a recipient (the
triggers app: saved searches), so erasure and export cover them without
this app importing theirs."""

from django.dispatch import Signal

# Sent inside the erasure's transaction, before the recipient's row goes,
# with `recipient_id`: receivers delete what they keep of it.
recipient_erasing = Signal()
# Sent while a recipient's export is built, with `recipient_id`: each
# receiver returns {section name: JSON-ready data} to add to the export.
recipient_exporting = Signal()
