"""Nightshift's Airflow package: hooks, operators, links, notifiers, the DAG factory and the plugin.

The logic lives in ``include.nightshift`` (no Airflow there); this package wires it to Airflow.
"""
