"""The label-set catalogue: registration, import, export and loading of label-set versions.

It sits above ``labels``, ``encoders``, ``index`` and ``store`` and below the client.
"""
