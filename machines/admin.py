"""The admin: an editor for machine sources, read-only versions, and diffs between them.

A machine's add and change pages are not model forms: editing a machine means writing a
new version of its source, so both pages are the same editor that calls save_version.

The editor (templates/admin/machines/machine/editor.html) is a textarea that CodeMirror 5
(static/vendor/codemirror-5.65.21, MIT, no build step) turns into a code editor with YAML
highlighting, line numbers and each problem shown under its line; without scripts the
textarea and its own line numbers remain. While the source is invalid the preview says
"fix the errors to see the diagram" instead of keeping an older drawing. Who may enter the
admin (staff, or editors without staff) is workflow_site/admin_site.py.
"""
import difflib
import json
import re

import yaml
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from accounts.roles import can_edit
from machines import selectors
from machines.diagrams import DiagramUnavailable, notice_svg, render_svg
from machines.forms import DiffForm, SourceForm
from machines.language import DefinitionError
from machines.models import Machine, MachineVersion
from machines.services import VersionConflict, check_source, declared_id, save_version
from machines.words import moment_and_relative

_INDEX = re.compile(r"\[(\d+)\]")

STARTER_SOURCE = """\
id: my-machine
title: My machine
start_at: draft
states:
  draft:
    label: Draft
    actions:
      - id: submit
        on: submit
        state: done
  done:
    label: Done
    return: null
"""


def render_preview_svg(definition) -> str:
    """The live preview's diagram: one bounded `dot` (machines.diagrams), or a picture that
    says why it is not drawn (too large, out of time or memory) instead of waiting."""
    try:
        return render_svg(definition)
    except DiagramUnavailable as exc:
        return notice_svg(exc.detail, exc.title)


@admin.register(Machine)
class MachineAdmin(admin.ModelAdmin):
    list_display = ["id", "latest_version", "title", "versions_count"]
    search_fields = ["id", "versions__title"]

    def get_queryset(self, request):
        return selectors.with_latest_version(super().get_queryset(request))

    @admin.display(description="Latest version", ordering="latest_version")
    def latest_version(self, machine):
        return machine.latest_version

    @admin.display(description="Title", ordering="latest_title")
    def title(self, machine):
        return machine.latest_title

    @admin.display(description="Versions", ordering="versions_count")
    def versions_count(self, machine):
        return machine.versions_count

    def has_add_permission(self, request):
        return can_edit(request.user)

    def has_change_permission(self, request, obj=None):
        return can_edit(request.user)

    def has_delete_permission(self, request, obj=None):
        return False  # versions are history: executions point at them

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("preview/", view(self.preview_view), name="machines_machine_preview"),
            path(
                "<path:object_id>/preview/",
                view(self.preview_view),
                name="machines_machine_preview_object",
            ),
            path("<path:object_id>/diff/", view(self.diff_view), name="machines_machine_diff"),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        return self.editor_view(request, None)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return self.editor_view(request, self._machine_or_404(request, object_id))

    def _machine_or_404(self, request, object_id):
        machine = self.get_object(request, unquote(object_id))
        if machine is None:
            raise Http404(f"No machine '{unquote(object_id)}'.")
        if not self.has_view_or_change_permission(request, machine):
            raise PermissionDenied
        return machine

    def editor_view(self, request, machine):
        """Show the latest source; Validate checks it, Save stores it as a new version."""
        latest = machine.latest if machine else None
        errors, warnings, outcome = [], [], None
        if request.method == "POST":
            form = SourceForm(request.POST)
            saving = "_save" in request.POST
            if saving and not can_edit(request.user):
                raise PermissionDenied
            if form.is_valid():
                source = form.cleaned_data["source"]
                if saving:
                    saved = self._save(request, machine, source)
                    if isinstance(saved, MachineVersion):
                        return redirect("admin:machines_machine_change", saved.machine_id)
                    errors, warnings = saved
                    outcome = "Not saved: fix the errors below."
                else:
                    checked = check_source(source)
                    errors, warnings = checked.errors, checked.warnings
                    outcome = _validation_summary(checked.valid, warnings)
        else:
            form = SourceForm(initial={"source": latest.source if latest else STARTER_SOURCE})
            if latest is not None:
                warnings = check_source(latest.source).warnings

        source_text = form["source"].value() or ""
        versions = list(machine.versions.select_related("created_by")) if machine else []
        errors = [_located(p, source_text) for p in errors]
        warnings = [_located(p, source_text) for p in warnings]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Edit machine {machine.id}" if machine else "Add machine",
            "machine": machine,
            "latest": latest,
            "versions": versions,
            "version_rows": list(zip(versions, [*versions[1:], None], strict=False)),
            "form": form,
            "errors": errors,
            "warnings": warnings,
            "outcome": outcome,
            "can_edit": can_edit(request.user),
            "line_count": range(1, source_text.count("\n") + 2),
            "problem_lines": sorted({p["line"] for p in errors if p.get("line")}),
            "preview_url": reverse(
                "admin:machines_machine_preview_object", args=[machine.id]
            )
            if machine
            else reverse("admin:machines_machine_preview"),
        }
        return TemplateResponse(
            request,
            "admin/machines/machine/editor.html",
            context,
            status=400 if errors else 200,
        )

    def _save(self, request, machine, source):
        """The stored version, or (errors, warnings) when nothing was saved."""
        source_id = declared_id(source)
        if machine is not None and source_id is not None and source_id != machine.id:
            return [_problem("id", f"This page edits machine '{machine.id}' but the source says "
                             f"id '{source_id}'.", "Keep the id, or use “Add machine” for a new "
                             "machine.")], []
        try:
            stored, created = save_version(source, user=request.user)
        except DefinitionError as invalid:
            return invalid.errors, invalid.warnings
        except VersionConflict as conflict:
            return [_problem("version", str(conflict), "Remove the `version` line (or set it "
                             "to a free number) to save the next version.")], []
        if created:
            note = f"Saved version {stored.version}."
            if machine is None:
                self.log_addition(request, stored.machine, note)
            else:
                self.log_change(request, stored.machine, note)
            messages.success(request, f"Saved {stored.machine_id} version {stored.version}.")
        else:
            messages.info(request, f"No changes: version {stored.version} is unchanged.")
        return stored

    def preview_view(self, request, object_id=None):
        """POST source -> {"valid", "errors", "warnings", "svg"} for the live diagram."""
        if object_id is not None:
            self._machine_or_404(request, object_id)
        elif not (self.has_view_or_change_permission(request) or can_edit(request.user)):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        source = request.POST.get("source", "")
        checked = check_source(source)
        return JsonResponse(
            {
                "valid": checked.valid,
                "errors": [_located(p, source) for p in checked.errors],
                "warnings": [_located(p, source) for p in checked.warnings],
                "svg": render_preview_svg(checked.machine) if checked.valid else None,
            }
        )

    def diff_view(self, request, object_id):
        """Two versions' sources side by side: ?a=1&b=2."""
        machine = self._machine_or_404(request, object_id)
        versions = {v.version: v for v in machine.versions.all()}
        numbers = sorted(versions, reverse=True)
        table, problem, status = None, None, 200
        if "a" in request.GET or "b" in request.GET:
            form = DiffForm(request.GET)
            if not form.is_valid():
                problem = "Choose two version numbers to compare, for example ?a=1&b=2."
                status = 400
            else:
                a, b = form.cleaned_data["a"], form.cleaned_data["b"]
                missing = [n for n in (a, b) if n not in versions]
                if missing:
                    problem = (
                        f"Machine '{machine.id}' has no version {missing[0]}; "
                        f"its versions are {', '.join(map(str, sorted(versions)))}."
                    )
                    status = 404
                elif versions[a].source != versions[b].source:
                    table = _diff_table(versions[a], versions[b])
        else:
            form = DiffForm(
                initial={"a": numbers[1] if len(numbers) > 1 else None, "b": numbers[0]}
                if numbers
                else None
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Compare versions of {machine.id}",
            "machine": machine,
            "numbers": numbers,
            "form": form,
            "selected_a": form["a"].value(),
            "selected_b": form["b"].value(),
            "table": table,
            "identical": form.is_bound and problem is None and table is None,
            "problem": problem,
        }
        return TemplateResponse(request, "admin/machines/machine/diff.html", context, status=status)


def _diff_table(old: MachineVersion, new: MachineVersion) -> str:
    table = difflib.HtmlDiff(tabsize=2, wrapcolumn=90).make_table(
        old.source.splitlines(),
        new.source.splitlines(),
        fromdesc=f"version {old.version}",
        todesc=f"version {new.version}",
        context=True,
        numlines=4,
    )
    return mark_safe(table)  # HtmlDiff escapes the sources' text itself


def _validation_summary(valid: bool, warnings) -> str:
    if not valid:
        return "Invalid: fix the errors below."
    if warnings:
        return f"Valid, with {len(warnings)} warning{'s' if len(warnings) != 1 else ''}."
    return "Valid."


def _problem(where: str, message: str, hint: str) -> dict:
    return {"path": where, "message": message, "hint": hint, "line": None, "column": None}


def _located(problem, text: str) -> dict:
    """The problem as a dict whose line/column point into `text`, the editor's textarea.

    The language reports lines only for text it could not parse (relative to the text) and
    for expressions (relative to the expression); fields are found by their path here.
    """
    data = problem if isinstance(problem, dict) else problem.to_dict()
    if not data.get("path"):
        return data
    key, value = _find_field(text, data["path"])
    if key is None:
        return data
    line, column = data.get("line"), data.get("column")
    if line is not None and isinstance(value, yaml.ScalarNode):  # inside an expression
        block = value.style in ("|", ">")
        first = value.start_mark.line + (2 if block else 1)
        on_first_line = line == 1 and not block and column is not None
        quote = 1 if value.style in ("'", '"') else 0
        return {
            **data,
            "line": first + line - 1,
            "column": value.start_mark.column + quote + column if on_first_line else None,
        }
    return {**data, "line": key.start_mark.line + 1, "column": key.start_mark.column + 1}


def _find_field(text: str, path: str):
    """(key node, value node) of `path` (e.g. states.open.actions[0].state) in the text.

    Stops at the deepest field that exists, so a missing key points at its parent. State
    names may contain dots: the longest key that fits the path wins.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return None, None
    key_node, rest = node, path
    while rest and node is not None:
        if isinstance(node, yaml.MappingNode):
            fits = [
                (k, v) for k, v in node.value
                if isinstance(k, yaml.ScalarNode)
                and (rest == k.value or rest.startswith((k.value + ".", k.value + "[")))
            ]
            if not fits:
                break
            key_node, node = max(fits, key=lambda kv: len(kv[0].value))
            rest = rest[len(key_node.value):].removeprefix(".")
        elif isinstance(node, yaml.SequenceNode) and (index := _INDEX.match(rest)):
            position = int(index.group(1))
            if position >= len(node.value):
                break
            key_node = node = node.value[position]
            rest = rest[index.end():].removeprefix(".")
        else:
            break
    return key_node, node


@admin.register(MachineVersion)
class MachineVersionAdmin(admin.ModelAdmin):
    """Versions are immutable: everyone may only look (given the view permission)."""

    list_display = ["__str__", "machine_link", "version", "title", "saved", "created_by"]
    list_filter = ["source_format"]
    search_fields = ["machine__id", "title"]
    list_select_related = ["machine", "created_by"]
    fields = [
        "machine_link",
        "version",
        "title",
        "description",
        "saved",
        "created_by",
        "content_hash",
        "compare",
        "source_format",
        "source_text",
        "definition_json",
    ]
    readonly_fields = fields

    @admin.display(description="Saved", ordering="created_at")
    def saved(self, version):
        """With its date, zone and how long ago, in the reader's zone, like the explorer."""
        return moment_and_relative(version.created_at, timezone.get_current_timezone())

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Machine", ordering="machine_id")
    def machine_link(self, version):
        url = reverse("admin:machines_machine_change", args=[version.machine_id])
        return format_html('<a href="{}">{}</a>', url, version.machine_id)

    @admin.display(description="Compare")
    def compare(self, version):
        diff = reverse("admin:machines_machine_diff", args=[version.machine_id])
        previous = selectors.previous_version(version)
        if previous is None:
            return "This is the first version."
        return format_html(
            '<a href="{}?a={}&amp;b={}">Changes since version {}</a>',
            diff,
            previous.version,
            version.version,
            previous.version,
        )

    @admin.display(description="Source")
    def source_text(self, version):
        return format_html('<pre class="dm-source-view">{}</pre>', version.source)

    @admin.display(description="Parsed definition")
    def definition_json(self, version):
        text = json.dumps(version.definition, indent=2, ensure_ascii=False)
        return format_html('<pre class="dm-source-view">{}</pre>', text)
