"""Contracts in the explorer (issue 13): the generated form of each action, one-click buttons
only for actions that take nothing, attribute columns and filters, short ids in URLs, the
header's search box."""
import re
import uuid

import pytest

from executions import services
from executions.models import Execution, HistoryEntry


@pytest.fixture
def operator(client, make_user):
    client.force_login(make_user("olga", "operator"))
    return client


@pytest.fixture
def refund(save_machine):
    return save_machine("refund.yaml")


def start_refund(refund_id="R-1", customer="c-17", amount=120):
    return services.start("refund", input={"refund_id": refund_id, "customer": customer,
                                           "amount": amount}, wait=True).execution


def page(client, execution):
    response = client.get(f"/executions/{execution.pk}/")
    assert response.status_code == 200
    return response.content.decode()


# Generated forms ------------------------------------------------------------------------
def test_actions_that_take_input_get_a_form_and_only_the_others_a_one_click_button(
        operator, refund):
    html = page(operator, start_refund())
    assert 'data-action="approve"' in html  # declared `{}`: one click
    assert 'data-action="reject"' not in html and 'data-action="adjust"' not in html
    reject = re.search(r'<form[^>]*id="form-input-reject".*?</form>', html, re.S).group(0)
    assert 'name="input-reject-reason"' in reject and "required" in reject
    category = re.search(r'<select name="input-reject-category".*?</select>', reject, re.S)
    assert '<option value="other" selected>' in category.group(0)
    assert '<option value="fraud">' in category.group(0)
    adjust = re.search(r'<form[^>]*id="form-input-adjust".*?</form>', html, re.S).group(0)
    assert 'type="number"' in adjust and 'name="input-adjust-amount"' in adjust
    assert "Send a JSON" not in html and 'name="input"' not in html  # no JSON box left


def test_a_form_sends_typed_input_and_its_errors_come_back_beside_the_fields(operator, refund):
    execution = start_refund()
    url = f"/executions/{execution.pk}/trigger/"
    rows = HistoryEntry.objects.filter(execution=execution).count()
    refused = operator.post(url, {"action": "adjust", "input-adjust-amount": "lots"})
    assert refused.status_code == 400 and "Enter a number" in refused.content.decode()
    beyond = operator.post(url, {"action": "adjust", "input-adjust-amount": "-5"})
    assert beyond.status_code == 400  # the schema's `> 0`, said beside the field
    assert re.search(r'name="input-adjust-amount".*?errorlist.*?minimum of 0',
                     beyond.content.decode(), re.S)
    assert HistoryEntry.objects.filter(execution=execution).count() == rows
    sent = operator.post(url, {"action": "adjust", "input-adjust-amount": "50.5"})
    assert sent.status_code == 302
    execution.refresh_from_db()
    assert execution.context["amount"] == 50.5 and execution.attributes["amount"] == 50.5
    operator.post(url, {"action": "reject", "input-reject-reason": "late"})
    execution.refresh_from_db()
    assert execution.status == "finished" and execution.result == {
        "refund": 0, "reason": "late", "category": "other"}  # the choice's default


def test_an_action_rejected_by_its_own_expression_says_so_and_changes_nothing(
        operator, refund):
    execution = start_refund(amount=100)
    url = f"/executions/{execution.pk}/trigger/"
    response = operator.post(url, {"action": "adjust", "input-adjust-amount": "500"},
                             follow=True)
    html = response.content.decode()
    assert "was not applied" in html and "applied: the execution" not in html
    execution.refresh_from_db()
    assert execution.status == "waiting" and execution.context["amount"] == 100


# Lists: attribute columns and filters ----------------------------------------------------
def test_a_machine_list_shows_attribute_columns_and_filters_by_them(operator, refund):
    small, large = start_refund("R-1", amount=20), start_refund("R-2", amount=700)
    html = operator.get("/executions/?machine=refund").content.decode()
    assert ">amount</th>" in html and ">customer</th>" in html and ">700<" in html
    assert 'name="attr.amount__gte"' in html
    filtered = operator.get("/executions/?machine=refund&attr.amount__gte=100")
    text = filtered.content.decode()
    assert large.short_id in text and small.short_id not in text
    refused = operator.get("/executions/?machine=refund&customer=c-17").content.decode()
    assert "customer</code>: Unknown parameter" in refused


def test_a_boolean_attribute_is_filtered_by_choosing_yes_or_no(operator, refund):
    unpaid = start_refund("R-1")
    html = operator.get("/executions/?machine=refund&attr.paid=false").content.decode()
    choice = re.search(r'<select name="attr.paid">(.*?)</select>', html, re.S)
    assert choice, "a boolean attribute is chosen from a list, not typed"
    assert '<option value="false" selected>no</option>' in choice.group(1)
    assert unpaid.short_id in html
    assert unpaid.short_id not in operator.get(
        "/executions/?machine=refund&attr.paid=true").content.decode()


# Short ids and the search box ------------------------------------------------------------
def test_a_short_id_opens_its_execution_and_an_ambiguous_one_offers_the_choice(
        operator, refund):
    execution = start_refund()
    response = operator.get(f"/executions/{execution.short_id}/")
    assert response.status_code == 302 and response["Location"] == f"/executions/{execution.pk}/"
    twin = Execution.objects.get(pk=execution.pk)
    twin.pk = uuid.UUID(execution.short_id + "-0000-4000-8000-000000000001")
    twin.business_key = None
    twin.save(force_insert=True)
    choice = operator.get(f"/executions/{execution.short_id}/")
    assert choice.status_code == 300
    assert str(execution.pk) in choice.content.decode() and str(twin.pk) in choice.content.decode()
    assert operator.get("/executions/0000ffff/").status_code == 404


def test_the_search_box_jumps_to_a_single_match_and_lists_several(operator, refund):
    first = start_refund("R-100", customer="c-9")
    second = start_refund("R-101", customer="c-9")
    by_key = operator.get("/search/?q=R-100")
    assert by_key.status_code == 302 and by_key["Location"] == first.get_absolute_url()
    by_id = operator.get(f"/search/?q={second.short_id}")
    assert by_id.status_code == 302 and by_id["Location"] == second.get_absolute_url()
    listed = operator.get("/search/?q=c-9").content.decode()
    assert first.short_id in listed and second.short_id in listed
    assert "attribute “customer”" in listed
    assert "Nothing matches" in operator.get("/search/?q=nobody").content.decode()
    assert 'role="search"' in operator.get("/executions/").content.decode()


def test_the_search_box_finds_a_number_attribute_by_its_value(operator, refund):
    large, small = start_refund("R-1", amount=700), start_refund("R-2", amount=20)
    for typed, meant in (("700", large), ("700.0", large), ("7e2", large), ("20", small)):
        found = operator.get("/search/", {"q": typed})
        assert found.status_code == 302 and found["Location"] == meant.get_absolute_url()
    for not_a_value in ("701", "nan", "inf"):
        assert "Nothing matches" in operator.get(f"/search/?q={not_a_value}").content.decode()


def test_a_page_s_own_parameters_are_not_refused_as_filters(operator, refund, save_machine):
    text = open("examples/refund.yaml").read().replace("version: 1", "version: 2").replace(
        "title: Refund", "title: Refunds")
    save_machine(text)
    html = operator.get("/machines/refund/?compare=1..2").content.decode()
    assert "Unknown parameter" not in html
    html = operator.get("/machines/refund/?colour=red").content.decode()
    assert "colour</code>: Unknown parameter" in html
