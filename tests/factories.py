"""Small builders for test objects: real models, saved through the ORM."""

import hashlib
import itertools

from django.contrib.auth.models import Group, User

from releases.models import Release, Service

_counter = itertools.count(1)


def hex_for(*parts, length=40):
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:length]


def make_user(username=None, groups=(), **fields):
    user = User.objects.create_user(username or f"user{next(_counter)}", password="pw-for-tests-only", **fields)
    for name in groups:
        user.groups.add(Group.objects.get_or_create(name=name)[0])
    return user


def make_service(name=None, team=None, **fields):
    name = name or f"svc-{next(_counter)}"
    fields.setdefault("image_repository", f"ghcr.io/nexo-org/{name}")
    if isinstance(team, str):
        team = Group.objects.get_or_create(name=team)[0]
    return Service.objects.create(name=name, team=team, **fields)


def make_release(service, version, **fields):
    fields.setdefault("commit_sha", hex_for(service.name, version))
    fields.setdefault("image_digest", "sha256:" + hex_for("digest", service.name, version, length=64))
    return Release.objects.create(service=service, version=version, **fields)
