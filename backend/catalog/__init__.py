"""The certificate catalog (证照目录): loading departments and types, the catalog file schema, definitions, faces."""
