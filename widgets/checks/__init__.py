"""check_... functions for each lesson's exercises; each returns a widgets.feedback.Feedback."""
