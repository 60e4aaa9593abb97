"""Interactive views for the lessons: ipywidgets and plotly, wired to course_lib functions."""
