"""Admin changes that decide who may deploy what, or what DORA counts, go into the audit log.

Django's own admin history (LogEntry) can be edited and names only the fields changed; the
portal's log is append-only and records each field's value before and after.
"""

from contextlib import suppress
from datetime import date, datetime

from django import forms
from django.contrib import admin
from django.db import models, transaction

from . import log as audit_log
from .models import AuditAction


def shown(value):
    """A value as the audit log keeps it: text, or a sorted list of texts for many-to-many fields."""
    if value is None:
        return ""
    if isinstance(value, (models.QuerySet, list, tuple, set)):
        return sorted(str(item) for item in value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)


def _place(obj):
    """The service, environment and version an object belongs to, for the log's columns."""
    service = getattr(obj, "service", None)
    environment = getattr(obj, "environment", None)
    opts = obj._meta
    return {
        "service": obj.name if opts.label == "releases.Service" else (service.name if service else ""),
        "environment": obj.name
        if opts.label == "environments.Environment"
        else (environment.name if environment else ""),
        "version": getattr(obj, "version", "") if opts.label == "releases.Release" else "",
    }


def _before(form, name):
    """The field's value before the change, in the same terms as after (objects, not ids)."""
    value = form.initial.get(name)
    field = form.fields[name]
    is_single_choice = isinstance(field, forms.ModelChoiceField) and not isinstance(
        field, forms.ModelMultipleChoiceField
    )
    if is_single_choice and value is not None and not isinstance(value, models.Model):
        with suppress(ValueError, TypeError):
            value = field.queryset.model._default_manager.filter(pk=value).first() or value
    return value


class AuditedAdmin(admin.ModelAdmin):
    """Records additions, changes (each field before → after, passwords never) and deletions."""

    audit_changes = True  # False where the model audits its own edits and only deletions are left

    def save_model(self, request, obj, form, change):
        # The audit chain's lock before any row, as every writer takes them (else: deadlocks with CI).
        audit_log.lock_chain()
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        if not self.audit_changes:
            return
        changes = {
            name: [shown(_before(form, name)), shown(form.cleaned_data.get(name))]
            for name in form.changed_data
            if "password" not in name
        }
        if change and not changes:
            return
        obj = form.instance
        what = f"{obj._meta.verbose_name} {obj}"
        if change:
            summary = "; ".join(
                f"{name}: {before or '—'} → {after or '—'}" for name, (before, after) in changes.items()
            )
            message = f"{what} changed in the admin: {summary}"
        else:
            message = f"{what} added in the admin"
        audit_log.record(
            AuditAction.ADMIN_CHANGED if change else AuditAction.ADMIN_ADDED,
            actor=request.user,
            message=message,
            data={"model": obj._meta.label, "object": obj.pk, "changes": changes},
            **_place(obj),
        )

    def delete_model(self, request, obj):
        with transaction.atomic():
            audit_log.record(  # takes the chain's lock before the row is touched
                AuditAction.ADMIN_DELETED,
                actor=request.user,
                message=f"{obj._meta.verbose_name} {obj} deleted in the admin",
                data={"model": obj._meta.label, "object": obj.pk},
                **_place(obj),
            )
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for obj in queryset:
                self.delete_model(request, obj)
