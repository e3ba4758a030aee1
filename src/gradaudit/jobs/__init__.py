"""What the commands do beyond computing an audit: settings and presets (``presets``), the method
names they know (``registry``), the models brought or trained here (``subjects``), where units run
(``executor``), and one module per command (``audit``, ``unlearn``, ``explain``, ``explain_text``,
``recommend``)."""
