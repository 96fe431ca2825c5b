# The base guest alone: SSH, firewall, persistent /var. Its image differs from web1/web2's.
{ }
