"""Staff's second factor for the admin: an authenticator app (TOTP) and single-use recovery
codes, on django-otp's devices. ``policy`` says who must give one, ``services`` enrols,
checks codes and resets, ``views`` are the pages between the password and the admin."""
