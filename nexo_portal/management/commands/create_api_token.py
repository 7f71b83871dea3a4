"""Create an API token from the command line (to bootstrap CI without the admin) and print it once."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from nexo_portal.models import SCOPES_HELP, ApiToken, TokenScope
from releases.models import Service


class Command(BaseCommand):
    help = "Create an API token and print it. Only its hash is kept: copy it into your CI secret store now."

    def add_arguments(self, parser):
        parser.add_argument("name", help="e.g. github-actions-nexo-be")
        parser.add_argument(
            "--scope",
            action="append",
            required=True,
            choices=TokenScope.values,
            dest="scopes",
            help=f"Repeatable. {SCOPES_HELP}",
        )
        parser.add_argument(
            "--service",
            action="append",
            default=[],
            dest="services",
            help="Limit it to this service, to act on and to read (repeatable). Without it: all services, "
            "those added later too.",
        )
        parser.add_argument("--user", help="Make it a personal token acting as this user.")
        parser.add_argument(
            "--created-by",
            help="The person creating it (default: nobody). Promotions a CI token requests count as requested by "
            "this person, who then may not approve them.",
        )
        parser.add_argument("--expires-in-days", type=int, help="Default: never expires.")

    def handle(self, *args, name, scopes, services, user, created_by, expires_in_days, **options):
        found = {service.name: service for service in Service.objects.filter(name__in=services)}
        missing = [service for service in services if service not in found]
        if missing:
            raise CommandError(
                f"No service named {', '.join(missing)}. Known: "
                f"{', '.join(Service.objects.values_list('name', flat=True))}."
            )
        user, created_by = _person(user), _person(created_by)
        expires_at = _expiry(expires_in_days)
        try:
            token, plain_token = ApiToken.objects.issue(
                name=name,
                scopes=scopes,
                services=found.values(),
                all_services=not services,
                user=user,
                expires_at=expires_at,
                created_by=created_by,
            )
        except ValidationError as error:
            raise CommandError(
                "; ".join(f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items())
            ) from error
        self.stdout.write(
            f"API token {token.name} ({', '.join(token.scope_list)}) for {token.describe_services()}. "
            "Copy it now, it is not shown again:"
        )
        self.stdout.write(plain_token)


def _expiry(days):
    if days is None:
        return None
    try:
        return timezone.now() + timedelta(days=days)
    except OverflowError as error:
        # timedelta and datetime end at year 9999; argparse's int has no end.
        raise CommandError(
            f"--expires-in-days: {days} days from now is past the year 9999; give fewer days, "
            "or leave it out for a token that never expires."
        ) from error


def _person(username):
    if username is None:
        return None
    try:
        return get_user_model().objects.get_by_natural_key(username)
    except get_user_model().DoesNotExist as error:
        raise CommandError(f"No user named {username}.") from error
