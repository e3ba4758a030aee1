"""What the commands do beyond computing an audit: every command's settings and presets, from which the
command line is built (``presets``, declared as ``settings`` describes), the method names they know
(``registry``), the models brought or trained here (``subjects``), where units run (``executor``), the rule
that a run folder answers for its settings (``runfolder``), and one module per command (``audit``,
``evaluate``, ``influence``, ``influence_text``, ``unlearn``, ``explain`` with its folder ``shards``,
``explain_text``, ``recommend``)."""
