"""Authorization: the admin's browser flow, MSAL token lifecycle, explanations."""
