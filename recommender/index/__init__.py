"""Vector indexes behind one small add/remove/search interface."""
