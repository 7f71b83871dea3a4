"""Forms of the board's confirmations."""

from django import forms

from . import calver

COMMENT_WIDGET = forms.Textarea(attrs={"rows": 3})


class CommentForm(forms.Form):
    comment = forms.CharField(required=False, max_length=2000, widget=COMMENT_WIDGET, label="Comment (optional)")


class PinField(forms.CharField):
    """What a confirmation showed that its action is held to, posted back with it (hidden). Rendered as the
    confirmation shows it now, in a form sent back too: the next click confirms what that page says, not
    what the page before it did."""

    widget = forms.HiddenInput

    def bound_data(self, data, initial):
        return initial


class ApproveForm(CommentForm):
    # Where the approvals stood on the confirmation (policy.approvals_standing): the approval is given
    # only while they stand so, never as the one that starts the commit unbeknown to its approver.
    expected = PinField(
        label="",
        error_messages={
            "required": "This approval did not say where the approvals stood on its page; look at them again "
            "here, and approve if you still mean to."
        },
    )
    field_order = ["expected", "comment"]


class RejectForm(forms.Form):
    # Required by the rejection rule itself (policy.why_not_reject); its refusal lands on this field.
    # The browser is told too, so it asks before sending.
    comment = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3, "required": True}),
        label="Why do you reject it?",
        help_text="Required: the requester reads it on the promotion page and in the audit log.",
    )


class StopForm(forms.Form):
    # Required by the rule itself (policy.why_not_stop); its refusal lands on this field.
    comment = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3, "required": True}),
        label="Why do you stop it?",
        help_text="Required: it is the reason the promotion fails, on its page, in the alert and in the audit log.",
    )


class RequestForm(forms.Form):
    emergency = forms.BooleanField(
        required=False,
        label="Break-glass: this is for an incident",
        help_text="Skips the previous-environment verification and change freezes; approvals are still required.",
    )
    reason = forms.CharField(required=False, max_length=2000, widget=COMMENT_WIDGET, label="Incident and reason")

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("emergency") and not cleaned.get("reason", "").strip():
            self.add_error("reason", "A break-glass promotion needs a reason: say which incident it is for.")
        return cleaned


class RollbackForm(forms.Form):
    release = forms.ChoiceField(label="Roll back to")
    # What the confirmation showed running: the rollback takes out that release or nothing
    # (policy.why_not_enter), not whatever a hotfix put there since the page was opened.
    running = forms.CharField(label="Running", max_length=calver.MAX_VERSION_LENGTH, widget=forms.HiddenInput())

    def __init__(self, *args, versions, environment, chosen_on_the_page=False, **kwargs):
        """`chosen_on_the_page`: the target is picked by a form of its own that shows its consequences
        first (the page without JavaScript); this one only carries the target shown."""
        super().__init__(*args, **kwargs)
        self.fields["release"].choices = [(version, version) for version in versions]
        self.fields["running"].error_messages["required"] = (
            f"this request did not say which release the page showed running; open the rollback again to see "
            f"what runs in {environment.name} now, and confirm that."
        )
        if chosen_on_the_page:
            self.fields["release"].widget = forms.HiddenInput()
