"""Path ids are input too: each is checked before a view touches the database,
so a NUL byte or a 10,000-character id is a 422 naming the field, never a
500 from the driver (PostgreSQL text cannot hold NUL)."""

from __future__ import annotations

from collections.abc import Callable

from rest_framework.views import APIView

from common.errors import InvalidInput
from notifications.services.recipients import check_external_id
from notifications.validation import validate_topic_key, validate_type_key


def _checker(
    field: str, validate: Callable[[object], str | None], what: str
) -> Callable[[str], None]:
    def check(value: str) -> None:
        problem = validate(value)
        if problem:
            raise InvalidInput(f"{what} {problem}.", errors={field: [problem]})

    return check


check_recipient_id = check_external_id
check_topic_key = _checker("key", validate_topic_key, "Topic key")
check_type_key = _checker("key", validate_type_key, "Notification type key")


class CheckedPathView(APIView):
    """An APIView whose `path_checks` ({url kwarg: check}) run after
    authentication, so an anonymous caller still gets 401 first."""

    path_checks: dict[str, Callable[[str], None]] = {}

    def initial(self, request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        for name, check in self.path_checks.items():
            if name in kwargs:
                check(kwargs[name])
