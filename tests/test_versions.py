"""Saving machine versions: idempotence, conflicts, next numbers, races, immutability."""
import json
import threading

import pytest
from django.db import connection

from machines.language import DefinitionError
from machines.models import Machine, MachineVersion
from machines.selectors import get_version, latest_versions
from machines.services import VersionConflict, save_version

ORDER = """\
# An order waits for payment.
id: order
title: Order
description: Takes an order to paid.
start_at: open
states:
  open:
    actions:
      - id: pay
        on: pay
        state: paid
  paid:
    return: "ctx"
"""


def order(version=None, final="paid", title="Order"):
    """The order machine, optionally with a version line and another final state name."""
    text = ORDER.replace("paid", final).replace("title: Order", f"title: {title}")
    return text.replace("id: order\n", f"id: order\nversion: {version}\n") if version else text


@pytest.mark.django_db
class TestSave:
    def test_first_save_creates_version_one_with_the_text_as_written(self, admin_user):
        stored, created = save_version(ORDER, user=admin_user)
        assert created and stored.version == 1 and stored.machine_id == "order"
        assert stored.source == ORDER  # the comment survives
        assert stored.source_format == "yaml"
        assert stored.title == "Order" and stored.description == "Takes an order to paid."
        assert stored.definition["version"] == 1 and stored.definition["start_at"] == "open"
        assert stored.created_by == admin_user
        assert Machine.objects.filter(id="order").exists()

    def test_identical_resave_of_an_explicit_version_is_a_noop(self):
        first, _ = save_version(order(version=3))
        again, created = save_version(order(version=3))
        assert not created and again.pk == first.pk and again.version == 3
        assert MachineVersion.objects.count() == 1

    def test_same_definition_written_differently_is_the_same_version(self):
        save_version(order(version=1))
        as_json = {
            "id": "order", "version": 1, "title": "Order", "description": "Takes an order to paid.",
            "start_at": "open",
            "states": {"open": {"actions": [{"id": "pay", "on": "pay", "state": "paid"}]},
                       "paid": {"return": "ctx"}},
        }
        _, created = save_version(json.dumps(as_json))
        assert not created

    def test_other_content_under_an_existing_version_is_a_conflict(self):
        save_version(order(version=1))
        with pytest.raises(VersionConflict) as conflict:
            save_version(order(version=1, final="settled"))
        assert (conflict.value.machine_id, conflict.value.version) == ("order", 1)
        assert "already exists" in str(conflict.value)
        assert MachineVersion.objects.get().definition["states"].keys() == {"open", "paid"}

    def test_omitted_version_takes_the_next_free_number(self):
        save_version(order(version=4))
        stored, created = save_version(order(final="settled"))
        assert created and stored.version == 5
        assert stored.definition["version"] == 5

    def test_omitted_version_identical_to_the_latest_is_a_noop(self):
        save_version(ORDER)
        save_version(order(final="settled"))
        latest, created = save_version(order(final="settled"))
        assert not created and latest.version == 2
        assert MachineVersion.objects.count() == 2

    def test_going_back_to_an_older_definition_is_a_new_version(self):
        save_version(ORDER)
        save_version(order(final="settled"))
        stored, created = save_version(ORDER)
        assert created and stored.version == 3

    def test_a_dict_is_stored_as_pretty_json(self):
        document = {"id": "tiny", "start_at": "done", "states": {"done": {"return": None}}}
        stored, created = save_version(document)
        assert created and stored.source_format == "json"
        assert json.loads(stored.source) == document
        assert "\n  " in stored.source

    def test_invalid_source_raises_all_errors_and_stores_nothing(self):
        broken = ORDER.replace("state: paid", "state: payd").replace("at: open", "at: x")
        with pytest.raises(DefinitionError) as invalid:
            save_version(broken)
        paths = {problem.path for problem in invalid.value.errors}
        assert "start_at" in paths and "states.open.actions[0].state" in paths
        assert not MachineVersion.objects.exists() and not Machine.objects.exists()

    def test_versions_are_never_rewritten(self):
        first, _ = save_version(ORDER)
        before = MachineVersion.objects.filter(pk=first.pk).values().get()
        save_version(order(final="settled"))
        save_version(order(final="closed", title="Closed order"))
        save_version(ORDER)
        assert MachineVersion.objects.filter(pk=first.pk).values().get() == before


@pytest.mark.django_db
def test_latest_versions_lists_each_machine_once_with_its_count():
    save_version(ORDER)
    save_version(order(final="settled", title="Order v2"))
    save_version({"id": "tiny", "start_at": "done", "states": {"done": {"return": None}}})
    rows = [(v.machine_id, v.version, v.title, v.versions_count) for v in latest_versions()]
    assert rows == [("order", 2, "Order v2", 2), ("tiny", 1, "", 1)]


@pytest.mark.django_db
def test_get_version_finds_the_latest_or_a_number_and_says_when_missing():
    save_version(ORDER)
    save_version(order(final="settled"))
    assert get_version("order").version == 2
    assert get_version("order", 1).definition["states"].keys() == {"open", "paid"}
    with pytest.raises(MachineVersion.DoesNotExist):
        get_version("order", 9)
    with pytest.raises(MachineVersion.DoesNotExist):
        get_version("nothing")


def run_at_once(sources):
    """Save each source in its own thread, all released together; results in order."""
    barrier = threading.Barrier(len(sources))
    results, failures = [None] * len(sources), []

    def save(index, source):
        try:
            barrier.wait()
            results[index] = save_version(source)
        except Exception as error:  # reported by the test, not swallowed
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=save, args=(i, s)) for i, s in enumerate(sources)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    return results


@pytest.mark.django_db(transaction=True)
def test_racing_saves_of_different_definitions_all_get_their_own_number():
    finals = ["paid", "settled", "closed", "done", "shipped"]
    results = run_at_once([order(final=f) for f in finals])
    assert all(created for _, created in results)
    assert sorted(stored.version for stored, _ in results) == [1, 2, 3, 4, 5]
    stored_finals = {
        v.version: set(v.definition["states"]) - {"open"} for v in MachineVersion.objects.all()
    }
    assert sorted(f for names in stored_finals.values() for f in names) == sorted(finals)


@pytest.mark.django_db(transaction=True)
def test_racing_saves_of_the_same_definition_store_it_once():
    save_version(order(final="settled"))
    results = run_at_once([ORDER] * 4)
    assert sorted(created for _, created in results) == [False, False, False, True]
    assert {stored.version for stored, _ in results} == {2}
    assert MachineVersion.objects.count() == 2
