"""Nightshift: batch machine learning on Airflow. This package never imports Airflow."""
